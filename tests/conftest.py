"""Test selection: ``pytest -E slurm`` runs only the tests marked ``env("slurm")``.

Without ``-E``, tests marked with a batch system are deselected and everything else runs.
``-E slurm-multi`` is the second, multi-node Slurm of ``ci/slurm-multi/run.sh``; its tests take
the ``slurm_multi`` fixture, which points every Slurm command at it.
"""

from __future__ import annotations

import os
import subprocess
import uuid

import dask.config
import pytest

from dask_jobqueue.config import reconfigure

from .waiting import wait_until

ENVIRONMENTS = (
    "slurm",
    "slurm-multi",
    "slurm-sge",
    "sge",
    "oar",
    "pbs",
    "torque",
    "moab",
    "lsf",
    "htcondor",
)

#: slurm.conf of the multi-node cluster of ci/slurm-multi/run.sh (SLURM_MULTI_ROOT there)
SLURM_MULTI_CONF = os.path.join(
    os.environ.get("SLURM_MULTI_ROOT", "/var/lib/ci-slurm-multi"), "etc", "slurm.conf"
)


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "-E",
        action="append",
        dest="environments",
        default=[],
        choices=ENVIRONMENTS,
        help="run only the tests that need this batch system (repeatable)",
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    selected = set(config.getoption("environments"))
    keep, drop = [], []
    for item in items:
        envs = {mark.args[0] for mark in item.iter_markers(name="env")}
        wanted = bool(envs & selected) if selected else not envs
        (keep if wanted else drop).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


@pytest.fixture(autouse=True)
def _fresh_config():
    """Each test starts from the packaged defaults, whatever a previous test set."""
    with dask.config.set({}):
        reconfigure()
        yield


@pytest.fixture
def slurm_multi(monkeypatch, tmp_path) -> str:
    """Point Slurm at the multi-node cluster of ``ci/slurm-multi/run.sh``; its slurm.conf path.

    ``SLURM_CONF`` is set in this process's environment: the commands a cluster runs, its
    watchdog and the jobs ``sbatch`` submits (which export the submitting environment) all
    inherit it. The test runs in ``tmp_path``, where Slurm writes the jobs' output files.
    """
    if not os.path.exists(SLURM_MULTI_CONF):
        pytest.fail(f"{SLURM_MULTI_CONF} is missing: run ci/slurm-multi/run.sh start first")
    monkeypatch.setenv("SLURM_CONF", SLURM_MULTI_CONF)
    monkeypatch.chdir(tmp_path)
    partitions = subprocess.run(
        ["sinfo", "-h", "-o", "%R"], capture_output=True, text=True, timeout=30, check=False
    )
    found = set(partitions.stdout.split())
    assert partitions.returncode == 0 and {"cpu", "gpu", "low", "high"} <= found, (
        f"the multi-node Slurm does not answer as expected (ci/slurm-multi/run.sh status): "
        f"exit {partitions.returncode}, partitions {sorted(found)}, {partitions.stderr.strip()}"
    )
    return SLURM_MULTI_CONF


@pytest.fixture
def no_stray_processes(monkeypatch):
    """Fail if the test leaves worker processes running.

    Jobs inherit a marker variable from the test, so workers of other programs (or other test
    runs on the same machine) are not counted.
    """
    token = f"{os.getpid()}-{uuid.uuid4().hex}"
    monkeypatch.setenv("DASK_JOBQUEUE_TEST_TOKEN", token)
    yield
    wait_until(lambda: not _worker_pids(token), timeout=15, interval=0.2)
    leftover = _worker_pids(token)
    assert not leftover, f"worker processes left running: {sorted(leftover)}"


def _worker_pids(token: str) -> set[int]:
    """PIDs of live (non-zombie) Dask worker processes started with ``token`` in their env."""
    pids = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmd = f.read()
            with open(f"/proc/{entry}/stat") as f:
                state = f.read().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if b"distributed.cli.dask_worker" not in cmd or state == "Z":
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as f:
                environ = f.read()
        except OSError:
            continue
        if f"DASK_JOBQUEUE_TEST_TOKEN={token}".encode() in environ:
            pids.add(int(entry))
    return pids
