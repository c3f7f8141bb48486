"""The job script's reachability check, run by a real bash against real sockets: workers start
when the scheduler accepts connections, and the job ends at once (status 0, one line) when it
does not."""

from __future__ import annotations

import socket
import subprocess

import pytest

from dask_jobqueue.slurm import SLURMJob

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
        assert lines[0].startswith(f"dask-jobqueue: scheduler {closed_port} unreachable (")
