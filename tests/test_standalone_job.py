"""A job used on its own, as ``dask-jobqueue`` 0.9 allowed (``await job.start()``,
``await job.close()``): it goes through the same engine as a cluster's jobs, and a job
started and never closed is cancelled at interpreter exit, as a cluster's jobs are.

Each scenario runs in a Python process of its own, which then exits.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from .fakecmd import fake_commands  # noqa: F401  (fixture)
from .test_slurm import _queue_ids
from .waiting import wait_until


def _run_python(code: str, cwd) -> str:
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def _alive(pid: int) -> bool:
    """Whether process ``pid`` exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def test_a_local_job_started_and_never_closed_ends_at_exit(tmp_path):
    logs = tmp_path / "logs"
    logs.mkdir(mode=0o700)
    pid = _run_python(
        f"""
        import asyncio
        from dask_jobqueue.local import LocalJob
        job = LocalJob(cores=1, memory="1GB", log_directory={str(logs)!r},
                       job_script_prologue=["sleep 300"])
        asyncio.run(job.start())
        print(job.job_id)
        """,
        tmp_path,
    )
    assert pid.isdigit()
    # the job really ran (its script is there) and its process is gone with the interpreter
    assert list(logs.glob("*.sh"))
    assert wait_until(lambda: not _alive(int(pid)), 10)


@pytest.mark.env("slurm")
def test_a_slurm_job_started_and_never_closed_is_cancelled_at_exit(tmp_path, fake_commands):  # noqa: F811
    fake_commands.wrap("sbatch")
    fake_commands.wrap("scancel")
    job_id = _run_python(
        """
        import asyncio
        from dask_jobqueue.slurm import SLURMJob
        job = SLURMJob(cores=1, memory="1GB", job_extra_directives=["--hold"])
        asyncio.run(job.start())
        print(job.job_id)
        """,
        tmp_path,
    )
    assert fake_commands.calls("sbatch") == 1
    # the one scancel: at exit, for this job
    assert fake_commands.argv("scancel") == [[job_id]]
    assert wait_until(lambda: job_id not in _queue_ids(), 30)


@pytest.mark.env("slurm")
def test_a_slurm_job_closed_is_not_cancelled_again_at_exit(tmp_path, fake_commands):  # noqa: F811
    fake_commands.wrap("scancel")
    out = _run_python(
        """
        import asyncio
        from dask_jobqueue.slurm import SLURMJob
        job = SLURMJob(cores=1, memory="1GB", job_extra_directives=["--hold"])

        async def main():
            await job.start()
            print(job.job_id, job.status.name, flush=True)
            await job.close()
            print(job.status.name)

        asyncio.run(main())
        """,
        tmp_path,
    )
    job_id, running, closed = out.split()
    assert (running, closed) == ("running", "closed")
    assert fake_commands.argv("scancel") == [[job_id]]  # by close(), none at exit
    assert wait_until(lambda: job_id not in _queue_ids(), 30)
