"""Preemption on the real multi-node Slurm (``pytest -E slurm-multi``, issue 18).

Partition ``low`` is preempted by requeue with ``GraceTime=20`` when a ``high`` job needs its
node (``ci/slurm-multi/``). Three workers on ``low`` hold scattered data; a high-priority
exclusive job takes one node. The worker there must hand its data over within the grace
period, the job must not count as a failure, ``cluster.jobs`` must say what happened, and the
capacity must come back soon after the high job ends.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import dask
import pytest
from distributed import Client

from dask_jobqueue import SLURMCluster
from dask_jobqueue.dialects.slurm import SQUEUE_FIELDS
from dask_jobqueue.tracking import Interruption

from .fakecmd import fake_commands  # noqa: F401  (fixture)
from .scheduler_suite import NO_DASHBOARD
from .waiting import quick_polling, wait_until

pytestmark = pytest.mark.env("slurm-multi")


def _slurm(argv: list[str]) -> str:
    """Run a Slurm command of the test itself: the real one, never a test's fake."""
    program = shutil.which(argv[0], path=os.defpath + os.pathsep + "/usr/bin") or argv[0]
    done = subprocess.run(
        [program, *argv[1:]], capture_output=True, text=True, timeout=30, check=False
    )
    assert done.returncode == 0, f"{argv}: exit {done.returncode}: {done.stderr.strip()}"
    return done.stdout


def _state(job_id: str) -> str:
    """The job's state, ``GONE`` once squeue no longer lists it."""
    out = _slurm(["squeue", "-h", "-t", "all", "-j", job_id, "-o", "%T"]).split()
    return out[0] if out else "GONE"


def _record_squeue(name: str, job_ids: list[str]) -> None:
    """With ``DASK_JOBQUEUE_RECORD_DIR`` set, save what the cluster's own status command
    prints now for these jobs (the parser tests read these files)."""
    directory = os.environ.get("DASK_JOBQUEUE_RECORD_DIR")
    if directory:
        bases = ",".join(dict.fromkeys(i.split("_")[0] for i in job_ids))
        out = _slurm(["squeue", "-h", "-t", "all", "-r", "-j", bases, "-O", SQUEUE_FIELDS])
        Path(directory, name).write_text(out)


def test_preempted_worker_hands_over_its_data_and_capacity_returns(slurm_multi, no_stray_processes):
    high: list[str] = []
    with (
        dask.config.set(quick_polling("slurm", "500ms", "2s")),
        SLURMCluster(
            cores=1,
            memory="500MB",
            walltime="00:15:00",
            queue="low",
            # one job per node, so that the high job preempts exactly one of them
            job_extra_directives=["--exclusive"],
            scheduler_options=NO_DASHBOARD,
        ) as cluster,
        Client(cluster) as client,
    ):
        try:
            cluster.scale(3)
            client.wait_for_workers(3, timeout=120)
            workers = sorted(client.scheduler_info()["workers"])
            expected = {}
            futures = []
            for k in range(30):
                value = f"value-{k}-" * 1000
                (future,) = client.scatter([value], workers=[workers[k % 3]], hash=False)
                futures.append(future)
                expected[future.key] = value
            placed = client.who_has(futures)
            assert sorted(len(where) for where in placed.values()) == [1] * 30, placed
            assert {next(iter(where)) for where in placed.values()} == set(workers)

            high.append(
                _slurm(
                    [
                        "sbatch",
                        "--parsable",
                        "-p",
                        "high",
                        "-N",
                        "1",
                        "--exclusive",
                        "-t",
                        "00:05:00",
                        "-o",
                        "/dev/null",
                        "--wrap",
                        "sleep 30",
                    ]
                )
                .strip()
                .split(";")[0]
            )

            def preempted():
                return [r for r in cluster.jobs if r.interruption == Interruption.PREEMPTED]

            (victim,) = wait_until(preempted, 30, 0.2)
            _record_squeue("squeue_ours_preempt_running.txt", [r.job_id for r in cluster.jobs])
            assert victim.interrupted_when, victim
            assert "preempted at" in repr(cluster.jobs)
            # the high job runs once the victim's processes are gone: its data moved before
            assert wait_until(lambda: _state(high[0]) == "RUNNING", 90), _state(high[0])
            assert len(client.scheduler_info()["workers"]) == 2
            values = client.gather(futures)
            assert dict(zip((f.key for f in futures), values, strict=True)) == expected

            assert wait_until(lambda: _state(high[0]) in ("COMPLETED", "GONE"), 60)
            high_ended = time.monotonic()
            client.wait_for_workers(3, timeout=60)
            back_after = time.monotonic() - high_ended
            assert back_after < 60
            # the data is still there, on the workers left and the new one
            assert client.gather(futures) == values

            jobs = cluster.jobs
            (record,) = [r for r in jobs if r.job_id == victim.job_id]
            assert record.error is None, record.error
            assert record.capacity is not None and record.capacity.startswith("replaced by ")
            replacement = record.capacity.removeprefix("replaced by ")
            assert any(r.name == replacement and r.workers_connected for r in jobs), jobs
            assert f"preempted at {victim.interrupted_when}; {record.capacity}" in repr(jobs)
            # nothing raised, nothing pending: scaling again works and submits nothing new
            submits = cluster.command_counts["submit"]
            cluster.scale(3)
            assert cluster.command_counts["submit"] == submits
            print(f"3 workers back {back_after:.1f} s after the high job ended\n{jobs!r}")
        finally:
            if high:
                subprocess.run(
                    [shutil.which("scancel", path="/usr/bin") or "scancel", *high],
                    capture_output=True,
                    timeout=30,
                    check=False,
                )


@pytest.mark.parametrize("fault", [None, "scancel fails once", "squeue fails once"])
def test_requeued_job_held_until_begintime_is_replaced(
    slurm_multi,
    no_stray_processes,
    fake_commands,  # noqa: F811
    fault,
):
    """``scontrol requeue`` (what preemption by requeue does after the grace period): the job
    waits again, held until its ``BeginTime`` (~2 minutes). It is not a failure; it is
    cancelled and replaced by a job that starts at once, also when the cancel command fails
    once (retried) or the status command fails at the poll that would have seen it."""
    with (
        dask.config.set(quick_polling("slurm", "500ms", "2s")),
        SLURMCluster(
            cores=1,
            memory="500MB",
            walltime="00:15:00",
            queue="low",
            scheduler_options=NO_DASHBOARD,
        ) as cluster,
        Client(cluster) as client,
    ):
        cluster.scale(2)
        client.wait_for_workers(2, timeout=120)
        victim = cluster.jobs[0]
        if fault == "scancel fails once":
            fake_commands.fail_times("scancel", 1, stderr="scancel: error: Socket timed out")
        elif fault == "squeue fails once":
            fake_commands.fail_times("squeue", 1, stderr="squeue: error: Socket timed out")
        _slurm(["scontrol", "requeue", victim.job_id])
        requeued_at = time.monotonic()

        def replaced():
            (record,) = [r for r in cluster.jobs if r.job_id == victim.job_id]
            return record if record.capacity else None

        record = wait_until(replaced, 30, 0.2)
        assert record, cluster.jobs
        _record_squeue("squeue_ours_requeued_held.txt", [victim.job_id])
        assert record.interruption == Interruption.REQUEUED and record.requeues == 1
        assert record.capacity.startswith("replaced by "), record
        assert record.state.is_final and record.error is None, record
        # the held job left the queue: cancelled, not waited for
        assert wait_until(lambda: _state(victim.job_id) in ("CANCELLED", "GONE"), 30)
        client.wait_for_workers(2, timeout=60)
        back_after = time.monotonic() - requeued_at
        # well before the requeued job could have started again (~121 s)
        assert back_after < 60, back_after
        names = {r.name for r in cluster.jobs if r.workers_connected}
        assert record.capacity.removeprefix("replaced by ") in names, cluster.jobs
        assert "requeued; replaced by" in repr(cluster.jobs)
        if fault:
            command = fault.split()[0]
            assert fake_commands.calls(command) >= 2, fake_commands.argv(command)
        print(f"2 workers back {back_after:.1f} s after the requeue\n{cluster.jobs!r}")
