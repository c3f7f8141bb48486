"""scheduler_in_job on the REAL Slurm (``-E slurm``): the scheduler in a batch job of its own,
the owner SIGKILLed, another process attaching by name; keep_alive running out with nobody
attaching; and, without keep_alive, a crash still cancelling everything (the watchdog).
Times are printed (``pytest -s``) and bounded by the assertions."""

from __future__ import annotations

import asyncio
import importlib
import re
import signal
import subprocess
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest
from distributed import Client

import dask_jobqueue
from dask_jobqueue.detached import read_record
from dask_jobqueue.engine import BatchSystem
from dask_jobqueue.slurm import SLURMCluster

from .detached_owner import spawn
from .fakecmd import fake_commands  # noqa: F401  (the fixture)
from .waiting import wait_until

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Real:
    module: str
    cluster: str
    #: keywords this batch system needs besides the common ones
    extra: dict


SYSTEMS = [
    pytest.param(
        Real("dask_jobqueue.slurm", "SLURMCluster", {}), marks=pytest.mark.env("slurm"), id="slurm"
    ),
    pytest.param(
        # qsub passes no environment: the scheduler's job imports dask_jobqueue from here
        Real(
            "dask_jobqueue.sge",
            "SGECluster",
            {"job_script_prologue": [f"export PYTHONPATH={ROOT}"]},
        ),
        marks=pytest.mark.env("sge"),
        id="sge",
    ),
    pytest.param(
        Real(
            "dask_jobqueue.pbs",
            "PBSCluster",
            {"job_script_prologue": [f"export PYTHONPATH={ROOT}"]},
        ),
        marks=pytest.mark.env("pbs"),
        id="openpbs",
    ),
]


def tagged(real: Real, cluster_id: str) -> set[str]:
    """Ids the batch system lists with a tag of ``cluster_id`` (an array may be listed once,
    under its own number)."""
    job_cls = getattr(importlib.import_module(real.module), real.cluster).job_cls
    engine = BatchSystem(job_cls(cores=1, memory="1GB"))
    listed = asyncio.run(engine.list_tagged())
    return {i for i, tag in listed.items() if tag.cluster_id == cluster_id}


def numbers(ids) -> set[str]:
    return {re.match(r"\d+", i).group(0) for i in ids}


def start_owner(real: Real, records: Path, keep_alive: str | None, jobs: int = 2):
    job_name = f"djq-sij-{uuid.uuid4().hex[:6]}"
    kwargs = {
        "cores": 1,
        "memory": "1GB",
        "processes": 1,
        "walltime": "00:15:00",
        "job_name": job_name,
        "scheduler_in_job": True,
        "cluster_name": "a",
        "record_directory": str(records),
        "scheduler_options": {"dashboard_address": ":0"},
        **real.extra,
    }
    if keep_alive is not None:
        kwargs["keep_alive"] = keep_alive
    owner, fields = spawn(real.module, real.cluster, kwargs, jobs)
    return owner, fields[0], fields[1], fields[2:]


def cancel_leftovers(real: Real, owner: subprocess.Popen, cluster_id: str) -> None:
    owner.kill()
    leftover = sorted(tagged(real, cluster_id))
    if leftover:
        command = "scancel" if real.cluster == "SLURMCluster" else "qdel"  # PBS: PATH first
        subprocess.run([command, *leftover], check=False, capture_output=True)


def kill(owner: subprocess.Popen) -> float:
    owner.send_signal(signal.SIGKILL)
    owner.wait(10)
    return time.monotonic()


@pytest.mark.parametrize("real", SYSTEMS)
def test_owner_killed_another_process_attaches_scales_and_closes(tmp_path, real):
    records = tmp_path / "records"
    owner, address, cluster_id, worker_ids = start_owner(real, records, keep_alive="3 minutes")
    try:
        record = read_record("a", records)
        before = tagged(real, cluster_id)
        assert numbers(before) == numbers([*worker_ids, record.scheduler_job_id]), before
        killed = kill(owner)
        cluster = dask_jobqueue.attach("a", record_directory=str(records))
        attached_after = time.monotonic() - killed
        try:
            assert type(cluster).__name__ == real.cluster
            assert cluster.scheduler_address == address
            with Client(cluster) as client:
                assert client.get_dataset("x") == [1, 2, 3]
                assert len(client.scheduler_info()["workers"]) == 2
            assert sorted(r.job_id for r in cluster.jobs) == sorted(worker_ids)
            cluster.scale(3)
            cluster.wait_for_workers(3, timeout=180, progress=False)
            ids = [r.job_id for r in cluster.jobs if not r.state.is_final]
            assert len(ids) == 3 and set(worker_ids) < set(ids), ids
            # no job of the cluster but its 3 worker jobs and the scheduler's
            assert numbers(tagged(real, cluster_id)) == numbers([*ids, record.scheduler_job_id])
        finally:
            cluster.close()
        closed = time.monotonic()
        assert wait_until(lambda: not tagged(real, cluster_id), timeout=30)
        print(
            f"{real.cluster}: attached {attached_after:.2f}s after the kill; queue empty "
            f"{time.monotonic() - closed:.1f}s after close()"
        )
        assert not (records / "a").exists()
    finally:
        cancel_leftovers(real, owner, cluster_id)


@pytest.mark.parametrize("real", SYSTEMS)
def test_keep_alive_runs_out_and_every_job_leaves_the_queue(tmp_path, real):
    records = tmp_path / "records"
    owner, address, cluster_id, worker_ids = start_owner(real, records, keep_alive="40 seconds")
    try:
        expected = numbers(tagged(real, cluster_id))
        killed = kill(owner)
        seen = []
        while time.monotonic() - killed < 15:
            seen.append(numbers(tagged(real, cluster_id)))
            time.sleep(1)
        assert seen and all(s == expected for s in seen), (expected, seen)
        assert wait_until(lambda: not tagged(real, cluster_id), timeout=40 + 45 - 15, interval=1)
        gone_after = time.monotonic() - killed
        print(f"{real.cluster}: keep_alive 40 s, every job gone {gone_after:.1f}s after the kill")
        assert gone_after < 40 + 45
        with pytest.raises(ValueError, match="Cluster 'a' is gone"):
            dask_jobqueue.attach("a", record_directory=str(records))
    finally:
        cancel_leftovers(real, owner, cluster_id)


@pytest.mark.parametrize("real", SYSTEMS)
def test_without_keep_alive_a_crash_cancels_everything_promptly(tmp_path, real):
    records = tmp_path / "records"
    owner, address, cluster_id, worker_ids = start_owner(real, records, keep_alive=None)
    try:
        assert tagged(real, cluster_id)
        killed = kill(owner)
        assert wait_until(lambda: not tagged(real, cluster_id), timeout=20, interval=0.5)
        print(
            f"{real.cluster}: no keep_alive, every job gone "
            f"{time.monotonic() - killed:.1f}s after the kill"
        )
    finally:
        cancel_leftovers(real, owner, cluster_id)


@pytest.mark.env("slurm")
def test_scheduler_job_refused_by_sbatch_is_a_clear_error_leaving_nothing(
    tmp_path,
    fake_commands,  # noqa: F811
):
    records = tmp_path / "records"
    job_name = f"djq-sij-{uuid.uuid4().hex[:6]}"
    fake_commands.fail_always(
        "sbatch", stderr="sbatch: error: Batch job submission failed: Invalid account", rc=1
    )
    with pytest.raises(RuntimeError, match="Invalid account"):
        SLURMCluster(
            cores=1,
            memory="1GB",
            job_name=job_name,
            scheduler_in_job=True,
            cluster_name="refused",
            record_directory=str(records),
        )
    assert fake_commands.calls("sbatch") >= 1
    assert not (records / "refused").exists()
    out = subprocess.run(
        ["squeue", "-h", "-n", f"{job_name},{job_name}-scheduler", "-o", "%i"],
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout
    assert out.strip() == ""


@pytest.mark.env("slurm")
def test_attach_while_the_tag_listing_fails_changes_nothing(
    tmp_path,
    fake_commands,  # noqa: F811
):
    records = tmp_path / "records"
    real = SYSTEMS[0].values[0]
    owner, address, cluster_id, worker_ids = start_owner(real, records, keep_alive="3 minutes")
    try:
        kill(owner)
        fake_commands.fail_matching(
            "squeue", "^%i[|]%k$", stderr="squeue: error: Socket timed out on send/recv", rc=1
        )
        with pytest.raises(RuntimeError, match="(?s)could not be listed.*Socket timed out"):
            dask_jobqueue.attach("a", record_directory=str(records))
        fake_commands.wrap("squeue")
        assert numbers(tagged(real, cluster_id)) == numbers(
            [*worker_ids, read_record("a", records).scheduler_job_id]
        )
        cluster = dask_jobqueue.attach("a", record_directory=str(records))  # at once: released
        try:
            assert sorted(r.job_id for r in cluster.jobs) == sorted(worker_ids)
        finally:
            cluster.close()
        assert wait_until(lambda: not tagged(real, cluster_id), timeout=30)
    finally:
        cancel_leftovers(real, owner, cluster_id)
