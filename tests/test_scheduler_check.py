"""The job script's reachability check, run by a real bash against real sockets: workers start
when the scheduler accepts connections, and the job ends at once (status 0, one line) when it
does not."""

from __future__ import annotations

import re
import socket
import subprocess
from pathlib import Path

import dask
import pytest

from dask_jobqueue import JobFailedError, SLURMCluster
from dask_jobqueue.job import explain_death
from dask_jobqueue.local import LocalCluster
from dask_jobqueue.slurm import SLURMJob
from dask_jobqueue.tracking import JobRecord, JobState

MARK = "workers would start here"


def check_script(address: str, one_line: bool) -> str:
    job = SLURMJob(address, cores=1, memory="1GB")
    lines = [job.scheduler_check_line()] if one_line else job.scheduler_check_lines()
    return "\n".join([*lines, f"echo '{MARK}'"]) + "\n"


@pytest.fixture
def listening():
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(8)
        yield f"tcp://127.0.0.1:{server.getsockname()[1]}"


@pytest.fixture
def closed_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"tcp://127.0.0.1:{port}"  # nobody listens: connections are refused


@pytest.mark.parametrize("one_line", [False, True], ids=["here-document", "one line"])
def test_reachable_scheduler_lets_the_workers_start(listening, one_line):
    result = subprocess.run(
        ["bash", "-c", check_script(listening, one_line)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == MARK
    assert result.stderr == ""


def test_gone_scheduler_ends_the_job_with_one_line(closed_port):
    procs = [
        subprocess.Popen(
            ["bash", "-c", check_script(closed_port, one_line)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for one_line in (False, True)
    ]
    for proc in procs:
        stdout, stderr = proc.communicate(timeout=60)
        assert proc.returncode == 0  # no failure mail, no requeue
        assert MARK not in stdout
        lines = stderr.strip().splitlines()
        assert len(lines) == 1, stderr
        # what was tried, from where, for how long, and what to change: as documented
        parts = _variable_parts(lines[0])
        assert parts == (
            closed_port,
            socket.gethostname(),
            parts[2],
            "[Errno 111] Connection refused",
        )
        assert 5 <= int(parts[2]) <= 8
        assert _without_variable_parts(lines[0]) == _without_variable_parts(documented_line())


# ---------------------------------------------------------------------- the documented text

_PARTS = re.compile(r" at (\S+) from node (\S+) \(tried for (\d+) s: (.*?)\)\. If ")


def _variable_parts(line: str) -> tuple[str, ...]:
    match = _PARTS.search(line)
    assert match, line
    return match.groups()


def _without_variable_parts(line: str) -> str:
    return _PARTS.sub(" at A from node N (tried for S s: E). If ", line)


def documented_line() -> str:
    """The check's line as docs/troubleshooting.rst quotes it (the block after the
    ``.. unreachable-message:`` marker)."""
    text = (Path(__file__).parents[1] / "docs" / "troubleshooting.rst").read_text()
    after = text.split(".. unreachable-message:", 1)[1]
    return next(line.strip() for line in after.splitlines() if line.startswith("    dask-"))


def unreachable_cluster(cls, address: str, **kwargs):
    """A cluster whose jobs are told to connect to ``address``; one death stops it."""
    with dask.config.set(
        {
            f"jobqueue.{cls.job_cls.config_name}.max-consecutive-failures": 1,
            f"jobqueue.{cls.job_cls.config_name}.poll-interval": "0.5s",
        }
    ):
        return cls(
            cores=1,
            memory="1GB",
            scheduler_options={"contact_address": address},
            **kwargs,
        )


def assert_diagnosed(cluster, address: str) -> None:
    """The cluster's error and its job table name the address, the node, the time and the
    settings to change."""
    cluster.scale(jobs=1)
    with pytest.raises(JobFailedError) as info:
        cluster.wait_for_workers(1, timeout=120)
    message = str(info.value)
    assert (
        "finished with exit code 0 before its workers connected: cannot reach the Dask "
        f"scheduler at {address} from node " in message
    ), message
    errors = [record.error for record in cluster.jobs if record.error]
    assert len(errors) == 1, cluster.jobs
    parts = _variable_parts(errors[0])
    assert parts[0] == address and parts[1] and int(parts[2]) >= 5
    for setting in ("set interface", "scheduler_options contact_address or host"):
        assert setting in errors[0]


def test_local_cluster_diagnoses_an_unreachable_scheduler(
    tmp_path, closed_port, no_stray_processes
):
    with unreachable_cluster(LocalCluster, closed_port, log_directory=str(tmp_path)) as cluster:
        assert_diagnosed(cluster, closed_port)


def test_without_the_output_the_cluster_still_names_the_address_and_settings(tmp_path):
    job = SLURMJob("tcp://10.1.2.3:8786", name="w-0", cores=1, memory="1GB",
                   log_directory=str(tmp_path))  # fmt: skip
    record = JobRecord(name="w-0", job_id="77", state=JobState.FINISHED, exit_code=0)
    message = explain_death(job, record)
    assert (
        "Most likely its scheduler check could not reach the Dask scheduler at "
        "tcp://10.1.2.3:8786 from the compute node: set interface" in message
    )
    assert "scheduler_options contact_address or host" in message
    failed = JobRecord(name="w-0", job_id="78", state=JobState.FAILED, exit_code=1)
    assert "scheduler check" not in explain_death(job, failed)


@pytest.mark.env("slurm")
def test_slurm_cluster_diagnoses_an_unreachable_scheduler(tmp_path, closed_port):
    with unreachable_cluster(
        SLURMCluster, closed_port, log_directory=str(tmp_path), job_name="unreachable"
    ) as cluster:
        assert_diagnosed(cluster, closed_port)
