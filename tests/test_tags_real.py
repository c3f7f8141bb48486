"""Tags match only our jobs, on the REAL batch systems (issue 19, item 5):

- real Slurm (``-E slurm``): a user's job whose comment mentions an orphaned cluster's tag
  survives ``dask-jobqueue cleanup --yes``, which cancels that cluster's jobs;
- real OpenPBS (``-E pbs``, ``/opt/pbs/bin`` first on ``PATH``), and the emulated Torque
  (``-E torque``): a job a worker submits with ``qsub -V`` (copying the worker's whole
  environment) survives the client's SIGKILL (its watchdog cancels the cluster's job) and
  ``cleanup --yes``.

``cleanup --yes`` cancels every orphaned dask-jobqueue job of this user on the batch system,
as it would for a user.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import uuid
from pathlib import Path

import pytest

from dask_jobqueue.tags import JobTag

from .test_cleanup import Client, cli
from .waiting import wait_until

ROOT = Path(__file__).parents[1]
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}


def sh(argv: list[str], check: bool = True, stdin: str | None = None) -> str:
    result = subprocess.run(argv, capture_output=True, text=True, timeout=60, input=stdin)
    if check and result.returncode != 0:
        raise AssertionError(f"{argv}: {result.returncode} {result.stderr}")
    return result.stdout


def listed_ids(output: str) -> set[str]:
    """Job ids of a ``dask-jobqueue status`` / ``cleanup`` table (first column)."""
    return {line.split()[0] for line in output.splitlines() if line.strip()}


def kill_client(client: Client | None, watchdog_too: bool) -> None:
    if client is None:
        return
    if watchdog_too and client.watchdog_pid:
        try:
            os.kill(client.watchdog_pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    if client.process.poll() is None:
        client.kill()


# ---------------------------------------------------------------------------- Slurm


def _slurm_live(ids: list[str]) -> dict[str, str]:
    """State of each of ``ids`` still pending or running (ended ones left out)."""
    out = sh(["squeue", "-h", "-t", "all", "-j", ",".join(ids), "-o", "%i %T"], check=False)
    states = dict(line.split() for line in out.splitlines() if line.strip())
    return {i: s for i, s in states.items() if s in ("PENDING", "RUNNING", "CONFIGURING")}


@pytest.mark.env("slurm")
def test_slurm_cleanup_spares_a_job_whose_comment_mentions_a_tag():
    name = f"djq-mention-{uuid.uuid4().hex[:6]}"
    kwargs = {
        "cores": 1,
        "memory": "1GB",
        "processes": 1,
        "job_name": name,
        "walltime": "00:10:00",
        "job_extra_directives": ["-H"],
        "scheduler_options": {"dashboard_address": ":0"},
    }
    client = Client(
        ENV,
        "dask_jobqueue.slurm",
        "SLURMCluster",
        2,
        kwargs,
        {"jobqueue.slurm.job-arrays": "never"},
    )
    user_job = None
    try:
        ours = client.job_ids
        comments = dict(
            line.split("|", 1)
            for line in sh(["squeue", "-h", "-j", ",".join(ours), "-o", "%i|%k"]).splitlines()
        )
        tag = comments[ours[0]]
        assert JobTag.parse(tag).cluster_id == client.cluster_id, comments
        # a user's own job, not Dask's, whose comment mentions that real tag
        user_job = sh(
            [
                "sbatch",
                "--parsable",
                "-J",
                f"{name}-user",
                "--comment",
                f"see {tag}",
                "--mem=50M",
                "-t",
                "00:10:00",
                "--wrap",
                "sleep 300",
            ]
        ).strip()
        user_job = user_job.split(";")[0]
        assert sh(["squeue", "-h", "-j", user_job, "-o", "%k"]).strip() == f"see {tag}"

        kill_client(client, watchdog_too=True)  # no watchdog: only cleanup cancels
        status = cli(ENV, "status", "slurm").stdout
        assert set(ours) <= listed_ids(status) and user_job not in listed_ids(status), status

        done = cli(ENV, "cleanup", "slurm", "--yes").stdout
        assert re.search(r"Cancelled [1-9]\d* job\(s\)", done), done
        assert set(ours) <= listed_ids(done) and user_job not in listed_ids(done), done
        assert wait_until(lambda: not _slurm_live(ours), 30), _slurm_live(ours)
        # cleanup has returned: its cancels are done; the user's job is still there
        assert user_job in _slurm_live([user_job])
        assert "CANCELLED" not in sh(["squeue", "-h", "-t", "all", "-j", user_job, "-o", "%T"])
    finally:
        kill_client(client, watchdog_too=True)
        left = [*client.job_ids, *([user_job] if user_job else [])]
        subprocess.run(["scancel", *left], capture_output=True, timeout=60)


# ---------------------------------------------------------------------------- OpenPBS


def _pbs_states(env: dict, ids: list[str]) -> dict[str, str]:
    """``job_state`` of each of ``ids`` the server still knows (finished: ``F``, Torque
    ``C``); ``qstat -f`` text, which OpenPBS (with ``-x`` for finished jobs) and Torque
    share."""
    history = ["-x"] if env.get("DJQ_PBS_FLAVOUR") == "pbs" else []
    out = subprocess.run(
        ["qstat", *history, "-f", *ids], capture_output=True, text=True, timeout=60, env=env
    ).stdout
    states, job_id = {}, None
    for line in out.splitlines():
        if line.startswith("Job Id:"):
            job_id = line.split(":", 1)[1].strip()
        elif line.strip().startswith("job_state = ") and job_id is not None:
            states[job_id] = line.split("=", 1)[1].strip()
    return states


def _alive(env: dict, job_id: str) -> bool:
    return _pbs_states(env, [job_id]).get(job_id) in ("Q", "R", "H")


@pytest.fixture
def pbs_env(request, tmp_path):
    """The real OpenPBS (``/opt/pbs/bin`` first on ``PATH``) or the emulated Torque."""
    if request.param == "pbs":
        if "pbs_version" not in sh(["qstat", "--version"], check=False):
            pytest.fail(
                "qstat on PATH is not PBS's: put /opt/pbs/bin first on PATH (ci/pbs/README.md)"
            )
        yield {**ENV, "DJQ_PBS_FLAVOUR": "pbs"}
        return
    from .emulator import emulated_scheduler, kill_all

    home = tmp_path / "emulator-torque"
    env = {**emulated_scheduler("torque", home, slots=8), "PYTHONPATH": str(ROOT)}
    yield {**env, "DJQ_PBS_FLAVOUR": "torque"}
    kill_all(home)


@pytest.mark.parametrize(
    "pbs_env",
    [
        pytest.param("pbs", marks=pytest.mark.env("pbs"), id="openpbs"),
        pytest.param("torque", marks=pytest.mark.env("torque"), id="torque-emulated"),
    ],
    indirect=True,
)
def test_pbs_job_submitted_with_qsub_V_from_a_worker_survives_watchdog_and_cleanup(pbs_env):
    env = pbs_env
    name = f"djq-vchild-{uuid.uuid4().hex[:6]}"
    kwargs = {
        "cores": 1,
        "memory": "1GB",
        "processes": 1,
        "job_name": name,
        "walltime": "00:10:00",
        "log_directory": f"/tmp/{name}",
        "scheduler_options": {"dashboard_address": ":0"},
    }
    qsub = subprocess.run(
        ["sh", "-c", "command -v qsub"], capture_output=True, text=True, env=env, check=True
    ).stdout.strip()
    # -V: the child gets the worker's whole environment; a name of its own (STDIN)
    child = {"argv": [qsub, "-V", "-l", "walltime=00:10:00"], "input": "sleep 300\n"}
    client = Client(
        env,
        "dask_jobqueue.pbs",
        "PBSCluster",
        1,
        kwargs,
        {"jobqueue.pbs.job-arrays": "never"},
        child=child,
    )
    child_id = None
    try:
        ours = client.job_ids
        line = client.process.stdout.readline().split()
        assert line[:2] == ["CHILD", "0"], line
        child_id = line[2]
        assert _alive(env, child_id)
        status = cli(env, "status", "pbs").stdout
        assert set(ours) <= listed_ids(status) and child_id not in listed_ids(status), status

        client.kill()  # the watchdog cancels the cluster's job, and only that
        assert wait_until(lambda: not any(_alive(env, i) for i in ours), 30), _pbs_states(env, ours)
        assert _alive(env, child_id), _pbs_states(env, [child_id])

        done = cli(env, "cleanup", "pbs", "--yes").stdout
        assert child_id not in listed_ids(done), done
        assert _alive(env, child_id), _pbs_states(env, [child_id])
    finally:
        kill_client(client, watchdog_too=True)
        subprocess.run(
            ["qdel", *client.job_ids, *([child_id] if child_id else [])],
            capture_output=True,
            timeout=60,
            env=env,
        )
