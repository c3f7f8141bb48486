"""scheduler_in_job on the REAL Slurm (``-E slurm``): the scheduler in a batch job of its own,
the owner SIGKILLed, another process attaching by name; keep_alive running out with nobody
attaching; and, without keep_alive, a crash still cancelling everything (the watchdog).
Times are printed (``pytest -s``) and bounded by the assertions."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from distributed import Client

import dask_jobqueue
from dask_jobqueue.slurm import SLURMCluster

from .fakecmd import fake_commands  # noqa: F401  (the fixture)
from .waiting import wait_until

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.env("slurm")


def slurm_jobs(cluster_id: str) -> dict[str, str]:
    """Pending or running Slurm jobs whose comment is a tag of ``cluster_id``: id -> name."""
    out = subprocess.run(
        ["squeue", "-h", "-t", "PD,R,CF,CG", "-o", "%i|%j|%k"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    jobs = {}
    for line in out.splitlines():
        job_id, name, comment = line.split("|", 2)
        if comment.startswith(f"djq1.{cluster_id}."):
            jobs[job_id] = name
    return jobs


def start_owner(records: Path, keep_alive: str | None, jobs: int = 2):
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
    }
    if keep_alive is not None:
        kwargs["keep_alive"] = keep_alive
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    owner = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.detached_owner",
            "dask_jobqueue.slurm",
            "SLURMCluster",
            json.dumps(kwargs),
            str(jobs),
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert owner.stdout is not None
    line = owner.stdout.readline().split()
    if not line or line[0] != "READY":
        owner.kill()
        pytest.fail(f"the owner did not get ready: {line}")
    return owner, line[1], line[2], line[3:]


def kill(owner: subprocess.Popen) -> float:
    owner.send_signal(signal.SIGKILL)
    owner.wait(10)
    return time.monotonic()


def test_owner_killed_another_process_attaches_scales_and_closes(tmp_path):
    records = tmp_path / "records"
    owner, address, cluster_id, worker_ids = start_owner(records, keep_alive="3 minutes")
    try:
        before = slurm_jobs(cluster_id)
        assert len(before) == 3 and set(worker_ids) < set(before), before
        killed = kill(owner)
        cluster = dask_jobqueue.attach("a", record_directory=str(records))
        attached_after = time.monotonic() - killed
        try:
            assert type(cluster).__name__ == "SLURMCluster"
            assert cluster.scheduler_address == address
            with Client(cluster) as client:
                assert client.get_dataset("x") == [1, 2, 3]
                assert len(client.scheduler_info()["workers"]) == 2
            assert sorted(r.job_id for r in cluster.jobs) == sorted(worker_ids)
            cluster.scale(3)
            cluster.wait_for_workers(3, timeout=180, progress=False)
            now = slurm_jobs(cluster_id)
            names = sorted(now.values())
            assert len(now) == 4, now  # 3 worker jobs and the scheduler's, none twice
            assert sum(n.endswith("-scheduler") for n in names) == 1, now
            assert set(before) <= set(now), (before, now)
        finally:
            cluster.close()
        closed = time.monotonic()
        wait_until(lambda: not slurm_jobs(cluster_id), timeout=30)
        print(
            f"attached {attached_after:.2f}s after the kill; queue empty "
            f"{time.monotonic() - closed:.1f}s after close()"
        )
        assert not (records / "a").exists()
    finally:
        owner.kill()
        leftover = list(slurm_jobs(cluster_id))
        if leftover:
            subprocess.run(["scancel", *leftover], check=False)


def test_keep_alive_runs_out_and_every_job_leaves_the_queue(tmp_path):
    records = tmp_path / "records"
    owner, address, cluster_id, worker_ids = start_owner(records, keep_alive="40 seconds")
    try:
        killed = kill(owner)
        counts = []
        while time.monotonic() - killed < 15:
            counts.append(len(slurm_jobs(cluster_id)))
            time.sleep(1)
        assert counts and min(counts) == 3, counts  # still there 15 s after the kill
        wait_until(lambda: not slurm_jobs(cluster_id), timeout=40 + 45 - 15, interval=1)
        gone_after = time.monotonic() - killed
        print(f"keep_alive 40 s: every job gone {gone_after:.1f}s after the kill")
        assert gone_after < 40 + 45
        with pytest.raises(ValueError, match="Cluster 'a' is gone"):
            dask_jobqueue.attach("a", record_directory=str(records))
    finally:
        owner.kill()
        leftover = list(slurm_jobs(cluster_id))
        if leftover:
            subprocess.run(["scancel", *leftover], check=False)


def test_without_keep_alive_a_crash_cancels_everything_promptly(tmp_path):
    records = tmp_path / "records"
    owner, address, cluster_id, worker_ids = start_owner(records, keep_alive=None)
    try:
        assert len(slurm_jobs(cluster_id)) == 3
        killed = kill(owner)
        wait_until(lambda: not slurm_jobs(cluster_id), timeout=20, interval=0.5)
        print(f"no keep_alive: every job gone {time.monotonic() - killed:.1f}s after the kill")
    finally:
        owner.kill()
        leftover = list(slurm_jobs(cluster_id))
        if leftover:
            subprocess.run(["scancel", *leftover], check=False)


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


def test_attach_while_the_tag_listing_fails_changes_nothing(
    tmp_path,
    fake_commands,  # noqa: F811
):
    records = tmp_path / "records"
    owner, address, cluster_id, worker_ids = start_owner(records, keep_alive="3 minutes")
    try:
        kill(owner)
        fake_commands.fail_matching(
            "squeue", "^%i[|]%k$", stderr="squeue: error: Socket timed out on send/recv", rc=1
        )
        with pytest.raises(RuntimeError, match="(?s)could not be listed.*Socket timed out"):
            dask_jobqueue.attach("a", record_directory=str(records))
        assert len(slurm_jobs(cluster_id)) == 3
        fake_commands.wrap("squeue")
        cluster = dask_jobqueue.attach("a", record_directory=str(records))  # at once: released
        try:
            assert sorted(r.job_id for r in cluster.jobs) == sorted(worker_ids)
        finally:
            cluster.close()
        wait_until(lambda: not slurm_jobs(cluster_id), timeout=30)
    finally:
        owner.kill()
        leftover = list(slurm_jobs(cluster_id))
        if leftover:
            subprocess.run(["scancel", *leftover], check=False)
