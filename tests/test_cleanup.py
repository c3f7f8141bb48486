"""A client killed hard: its watchdog cancels its jobs; with the watchdog killed too,
``dask-jobqueue status``/``cleanup`` find and cancel them. On the emulated PBS, Torque, Moab,
LSF and HTCondor (``-E lsf`` ...); the real Slurm/SGE/OAR versions are in
``test_orphans_real.py``."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dask_jobqueue.cli import detect_scheduler, orphans
from dask_jobqueue.tags import JobTag

from .waiting import wait_until

ROOT = Path(__file__).parents[1]


# Held jobs: queued jobs never end by themselves (a running worker whose scheduler is gone
# exits on its own).
def held_jobs_of(flavour: str, module: str, cluster: str, keywords: dict) -> object:
    """The case of one batch system (selected by ``-E flavour``), its jobs submitted held."""
    return pytest.param(
        flavour, module, cluster, keywords, marks=pytest.mark.env(flavour), id=flavour
    )


EMULATED = [
    held_jobs_of("pbs", "dask_jobqueue.pbs", "PBSCluster", {"job_extra_directives": ["-h"]}),
    held_jobs_of("torque", "dask_jobqueue.pbs", "PBSCluster", {"job_extra_directives": ["-h"]}),
    held_jobs_of("moab", "dask_jobqueue.moab", "MoabCluster", {"job_extra_directives": ["-h"]}),
    held_jobs_of("lsf", "dask_jobqueue.lsf", "LSFCluster", {"job_extra_directives": ["-H"]}),
    held_jobs_of(
        "htcondor",
        "dask_jobqueue.htcondor",
        "HTCondorCluster",
        {"disk": "1GB", "job_extra_directives": {"hold": "True"}},
    ),
]
CLI_NAME = {"pbs": "pbs", "torque": "pbs", "moab": "moab", "lsf": "lsf", "htcondor": "htcondor"}


class Client:
    """The client subprocess (tests/orphan_client.py) and what it reported."""

    def __init__(self, env, module, name, jobs, kwargs, config=None, child=None):
        self.env = env
        argv = [
            sys.executable,
            "-m",
            "tests.orphan_client",
            module,
            name,
            str(jobs),
            json.dumps(kwargs),
            json.dumps(config or {}),
        ]
        if child is not None:  # a command run in a worker: its result on a second line
            argv.append(json.dumps(child))
        self.process = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True, env=env, cwd=ROOT)
        line = self.process.stdout.readline().split()
        assert line and line[0] == "READY", line
        self.cluster_id, self.watchdog_pid, self.job_ids = line[1], int(line[2]), line[3:]

    def kill(self) -> float:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()
        return time.monotonic()


def cli(env, *args, check=True) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [sys.executable, "-m", "dask_jobqueue", *args],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    if check:
        assert result.returncode == 0, (args, result.stdout, result.stderr)
    return result


def tagged_ids(env, scheduler, cluster_id) -> set[str]:
    out = cli(env, "status", scheduler).stdout
    return {line.split()[0] for line in out.splitlines() if f" {cluster_id} " in line}


@pytest.fixture
def emulated_env(tmp_path):
    from .emulator import emulated_scheduler, kill_all

    homes = []

    def start(flavour):
        home = tmp_path / f"emulator-{flavour}"
        env = dict(emulated_scheduler(flavour, home, slots=8))
        env["PYTHONPATH"] = str(ROOT)
        homes.append(home)
        return env

    yield start
    for home in homes:
        kill_all(home)


KWARGS = {
    "cores": 1,
    "memory": "1GB",
    "job_name": "djq-orphan-test",
    "scheduler_options": {"dashboard_address": ":0"},
}


@pytest.mark.parametrize("flavour, module, name, extra", EMULATED)
def test_watchdog_cancels_the_jobs_of_a_killed_client(flavour, module, name, extra, emulated_env):
    env = emulated_env(flavour)
    client = Client(env, module, name, 3, {**KWARGS, **extra})
    scheduler = CLI_NAME[flavour]
    assert tagged_ids(env, scheduler, client.cluster_id) == set(client.job_ids)
    killed = client.kill()
    assert wait_until(lambda: not tagged_ids(env, scheduler, client.cluster_id), 20)
    assert time.monotonic() - killed < 20


@pytest.mark.parametrize("flavour, module, name, extra", EMULATED)
def test_cleanup_cancels_jobs_whose_owner_and_watchdog_are_gone(
    flavour, module, name, extra, emulated_env
):
    env = emulated_env(flavour)
    client = Client(env, module, name, 2, {**KWARGS, **extra})
    scheduler = CLI_NAME[flavour]
    status = cli(env, "status", scheduler).stdout
    mine = [line.split() for line in status.splitlines() if f" {client.cluster_id} " in line]
    assert sorted(row[0] for row in mine) == sorted(client.job_ids)
    assert all(row[4:6] == ["alive", "alive"] for row in mine), status
    # a live owner's jobs are never cleaned up
    assert "No orphaned" in cli(env, "cleanup", scheduler, "--yes").stdout

    os.kill(client.watchdog_pid, signal.SIGKILL)
    client.kill()
    status = cli(env, "status", scheduler).stdout
    mine = [line.split() for line in status.splitlines() if f" {client.cluster_id} " in line]
    assert all(row[4:6] == ["gone", "gone"] for row in mine), status

    dry = cli(env, "cleanup", scheduler, "--dry-run").stdout
    assert "would cancel 2 job(s)" in dry
    assert all(job_id in dry for job_id in client.job_ids)
    assert tagged_ids(env, scheduler, client.cluster_id) == set(client.job_ids)

    refused = cli(env, "cleanup", scheduler, check=False)
    assert refused.returncode == 2 and "--yes" in refused.stderr  # stdin is not a terminal
    done = cli(env, "cleanup", scheduler, "--yes").stdout
    assert "Cancelled 2 job(s)." in done
    assert wait_until(lambda: not tagged_ids(env, scheduler, client.cluster_id), 10)


# ---------------------------------------------------------------------- pure parts


def _row(owner, watchdog, local=True):
    return {
        "job_id": "1",
        "tag": JobTag("0a1b2c3d", 1, 2, "h"),
        "local": local,
        "owner": owner,
        "watchdog": watchdog,
    }


def test_orphans_are_jobs_whose_owner_and_watchdog_are_gone():
    rows = [
        _row("gone", "gone"),
        _row("alive", "alive"),
        _row("gone", "alive"),
        _row("unknown", "unknown", local=False),
    ]
    assert orphans(rows, include_other_hosts=False) == [rows[0]]
    assert orphans(rows, include_other_hosts=True) == [rows[0], rows[3]]


def test_scheduler_detection():
    assert detect_scheduler(lambda p: p == "sbatch") == "slurm"
    assert detect_scheduler(lambda p: p in ("qsub", "qconf")) == "sge"
    from dask_jobqueue.cli import UsageError

    with pytest.raises(UsageError, match="several batch systems found"):
        detect_scheduler(lambda p: p in ("sbatch", "bsub"))
    with pytest.raises(UsageError, match="no batch system found"):
        detect_scheduler(lambda p: False)


def test_cli_errors_are_one_line():
    result = cli(dict(os.environ, PYTHONPATH=str(ROOT)), "cleanup", "local", check=False)
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0 and "local jobs carry no" in result.stderr
