"""A pool of another batch system under one scheduler, on two REAL batch systems at once
(``pytest -E slurm-sge``; ``ci/slurm-sge/run.sh start`` runs the multi-node Slurm and a Grid
Engine cell "cross" side by side on this host).

The cluster is a ``SLURMCluster`` whose workers advertise the resource ``SLURM``; its pool
``sge`` is an ``SGECluster`` whose workers advertise ``SGE``. Under ``adapt``, tasks asking for
``SGE`` grow the Grid Engine pool only and run in Grid Engine jobs, tasks asking for ``SLURM``
run in Slurm jobs; ``close()`` leaves nothing in either queue.
"""

from __future__ import annotations

import os
import shlex
import subprocess
from pathlib import Path

import dask
import pytest
from distributed import Client

from dask_jobqueue import SGECluster, SLURMCluster

from .scheduler_suite import NO_DASHBOARD
from .waiting import quick_polling, wait_until

pytestmark = pytest.mark.env("slurm-sge")

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def sge_cross(monkeypatch) -> dict[str, str]:
    """Point Grid Engine's commands at the cell of ``ci/slurm-sge/run.sh`` (its variables)."""
    printed = subprocess.run(
        ["bash", str(ROOT / "ci" / "sge" / "run.sh"), "env"],
        env={**os.environ, "SGE_CI_CELL": "cross"},
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    ).stdout
    variables = dict(word.split("=", 1) for word in shlex.split(printed) if "=" in word)
    for key, value in variables.items():
        monkeypatch.setenv(key, value)
    status = subprocess.run(["qstat", "-g", "c"], capture_output=True, text=True, check=False)
    assert status.returncode == 0, (
        f"the Grid Engine cell 'cross' does not answer (ci/slurm-sge/run.sh start): "
        f"{status.stderr.strip()}"
    )
    return variables


def in_queue() -> tuple[set[str], set[str]]:
    """Ids of this user's jobs Slurm and Grid Engine still list."""
    slurm = subprocess.run(
        ["squeue", "-h", "-o", "%i"], capture_output=True, text=True, check=True, timeout=30
    ).stdout.split()
    sge = subprocess.run(
        ["qstat"], capture_output=True, text=True, check=True, timeout=30
    ).stdout.splitlines()[2:]
    return set(slurm), {line.split()[0] for line in sge if line.strip()}


def test_a_grid_engine_pool_under_a_slurm_cluster(slurm_multi, sge_cross):
    settings = {**quick_polling("slurm", "300ms", "1s"), **quick_polling("sge", "300ms", "1s")}
    with (
        dask.config.set(settings),
        SLURMCluster(
            cores=1,
            memory="500MB",
            queue="cpu",
            walltime="00:10:00",
            worker_extra_args=["--resources", "SLURM=1"],
            scheduler_options=NO_DASHBOARD,
        ) as cluster,
        Client(cluster) as client,
    ):
        sge = cluster.add_pool(
            "sge",
            cluster_cls=SGECluster,
            cores=1,
            memory="500MB",
            worker_extra_args=["--resources", "SGE=1"],
        )
        assert sge.scheduler_address == cluster.scheduler_address
        cluster.adapt(minimum_jobs=0, maximum_jobs=2, interval="300ms")

        def where(i: int) -> tuple[int, str | None, str | None]:
            return i, os.environ.get("JOB_ID"), os.environ.get("SLURM_JOB_ID")

        sge_futures = [client.submit(where, i, resources={"SGE": 1}, pure=False) for i in range(4)]
        assert wait_until(lambda: all(f.done() for f in sge_futures), 120), repr(cluster.jobs)
        on_sge = client.gather(sge_futures, errors="raise")
        assert [i for i, _, _ in on_sge] == list(range(4))
        assert all(sge_id and not slurm_id for _, sge_id, slurm_id in on_sge), on_sge
        assert sge.command_counts["submit"] >= 1
        assert cluster.command_counts.get("submit", 0) == 0  # SGE tasks grew no Slurm job

        slurm_futures = [
            client.submit(where, i, resources={"SLURM": 1}, pure=False) for i in range(2)
        ]
        assert wait_until(lambda: all(f.done() for f in slurm_futures), 120), repr(cluster.jobs)
        on_slurm = client.gather(slurm_futures, errors="raise")
        assert all(slurm_id and not sge_id for _, sge_id, slurm_id in on_slurm), on_slurm
        assert cluster.command_counts["submit"] >= 1
        assert {r.pool for r in cluster.jobs} == {None, "sge"}
        ids_slurm = {r.job_id for r in cluster.jobs if r.pool is None}
        ids_sge = {r.job_id for r in cluster.jobs if r.pool == "sge"}
        assert ids_sge
    assert wait_until(
        lambda: not (in_queue()[0] & ids_slurm) and not (in_queue()[1] & ids_sge), 60
    ), in_queue()
