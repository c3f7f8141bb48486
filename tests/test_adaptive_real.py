"""Adaptive scaling on the REAL Slurm (issue 18, item 1).

* ``adapt(minimum_jobs=0, maximum_jobs=4)``, 40 half-second tasks, 30 s idle, 40 more: with
  default settings the jobs of the first burst serve the second (first result within 2 s),
  at most 4 jobs over the run, none cancelled;
* ``cores=4, processes=4`` with ``adapt(maximum=8)`` and ``adapt(maximum=6)``, 300 pending
  0.2-s tasks: at most 2 jobs, none cancelled while tasks are pending (dask-jobqueue #498);
* a released running job has its workers retired: the data they held is still there;
* workers leaving at their ``--lifetime`` (dask-jobqueue #691): their jobs are replaced by
  the cluster, adapt neither adds jobs for them nor cancels the replacements;
* held jobs (workers never connect) are capacity coming: no more are submitted for the same
  demand, and they are the ones cancelled when the demand goes;
* ``sbatch`` failing every time under ``adapt()``: a bounded number of submit commands, the
  error raised by the next ``adapt()`` call.

The CI node has 16 CPUs: 4 one-core jobs and 2 four-core jobs fit at once, so the numbers of
the issue are used unscaled.
"""

from __future__ import annotations

import time

import dask
import pytest
from distributed import Client, as_completed

from dask_jobqueue import CommandError, JobState
from dask_jobqueue.slurm import SLURMCluster

from .fakecmd import fake_commands  # noqa: F401  (fixture)
from .lifetime_stream import run_stream
from .scheduler_suite import NO_DASHBOARD
from .test_slurm import SLURM
from .waiting import wait_until

pytestmark = pytest.mark.env("slurm")


@pytest.fixture(autouse=True)
def in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # job output files land here


def make_cluster(**kwargs) -> SLURMCluster:
    options = {
        **SLURM.kwargs,
        "job_name": "djq-adapt-test",
        "scheduler_options": NO_DASHBOARD,
        **kwargs,
    }
    return SLURMCluster(**options)


def job_ids(cluster) -> set[str]:
    return {r.job_id for r in cluster.jobs}


def sleepy(seconds):
    def task(i):
        time.sleep(seconds)
        return i

    return task


def test_burst_idle_burst_keeps_its_jobs():
    with make_cluster() as cluster, Client(cluster) as client:
        cluster.adapt(minimum_jobs=0, maximum_jobs=4)
        first = client.map(sleepy(0.5), range(40), pure=False)
        assert client.gather(first) == list(range(40))
        del first
        time.sleep(30)  # idle: the counters below would show any submit or cancel meanwhile
        started = time.monotonic()
        second = client.map(sleepy(0.5), range(100, 140), pure=False)
        next(as_completed(second))
        latency = time.monotonic() - started
        assert client.gather(second) == list(range(100, 140))
        counts = cluster.command_counts
        ids = job_ids(cluster)
        print(f"burst-idle-burst: latency {latency:.2f}s, {len(ids)} jobs, {counts}")
        assert latency < 2.0
        assert counts["submit"] <= 4 and len(ids) <= 4, (counts, cluster.jobs)
        assert counts.get("cancel", 0) == 0, counts
    assert wait_until(lambda: not (ids & SLURM.queue_ids()), 60)


@pytest.mark.parametrize("maximum", [8, 6])
def test_several_processes_per_job_do_not_loop(maximum):
    """dask-jobqueue #498: with processes>1, adapt submitted and cancelled in a loop."""
    with make_cluster(cores=4, processes=4, memory="4GB") as cluster, Client(cluster) as client:
        cluster.adapt(maximum=maximum)
        futures = client.map(sleepy(0.2), range(300), pure=False)
        assert client.gather(futures) == list(range(300))
        # counted the moment the last result arrived: every task was pending until then
        counts = cluster.command_counts
        states = [r.state for r in cluster.jobs]
        print(f"maximum={maximum}: {counts}, {states}")
        assert len(states) <= 2 and counts["submit"] <= 2, (counts, cluster.jobs)
        assert counts.get("cancel", 0) == 0, counts
        assert JobState.CANCELLED not in states
        ids = job_ids(cluster)
    assert wait_until(lambda: not (ids & SLURM.queue_ids()), 60)


def test_released_job_hands_over_its_data():
    with make_cluster() as cluster, Client(cluster) as client:
        adaptive = cluster.adapt(minimum_jobs=1, maximum_jobs=2, idle_timeout="5s")
        # enough work for two jobs; keep the results, spread over both workers
        results = client.map(sleepy(1.0), range(20), pure=False)
        client.wait_for_workers(2, timeout=SLURM.timeout)
        client.gather(results)
        holders = client.who_has(results)
        assert len({w for ws in holders.values() for w in ws}) == 2, holders
        ids = job_ids(cluster)
        # idle past the keep-warm time: one job goes (the minimum stays), its data moves
        assert wait_until(lambda: len(cluster.workers) == 1, 60), cluster.jobs
        assert wait_until(lambda: len(client.scheduler_info()["workers"]) == 1, 30)
        assert client.gather(results) == list(range(20))
        assert adaptive.released_jobs == 1
        assert wait_until(lambda: len(ids & SLURM.queue_ids()) == 1, 60)
        assert cluster.command_counts["cancel"] >= 1
    assert wait_until(lambda: not (ids & SLURM.queue_ids()), 60)


def test_workers_with_a_lifetime_are_replaced_without_a_loop():
    # the stream lasts three lifetimes: every job is replaced, and most replacements are too
    lifetime = ["--lifetime", "15s", "--lifetime-stagger", "3s"]
    with make_cluster(worker_extra_args=lifetime) as cluster, Client(cluster) as client:
        adaptive = cluster.adapt(minimum_jobs=0, maximum_jobs=2)
        result = run_stream(client, seconds=45, in_flight=8)
        counts = cluster.command_counts
        records = cluster.jobs
        print(
            f"lifetime stream: {result.as_dict()}, {counts}, adapt submitted "
            f"{adaptive.submitted_jobs}, released {adaptive.released_jobs}"
        )
        assert result.errors == [] and result.completed == result.submitted, result.as_dict()
        ended = [r for r in records if r.state.is_final]
        assert len(ended) >= 2, records  # workers did leave at their lifetime
        # adapt asked for the two jobs once; every later job is the cluster's replacement
        assert adaptive.submitted_jobs == 2
        assert adaptive.released_jobs == 0
        assert counts.get("cancel", 0) == 0, counts
        assert not [r for r in records if r.state == JobState.CANCELLED], records
        ids = job_ids(cluster)
    assert wait_until(lambda: not (ids & SLURM.queue_ids()), 60)


def test_held_jobs_are_capacity_coming_and_go_first():
    with make_cluster(**SLURM.hold_kwargs) as cluster, Client(cluster) as client:
        adaptive = cluster.adapt(minimum_jobs=0, maximum_jobs=3, idle_timeout="3s")
        futures = client.map(sleepy(0.5), range(40), pure=False)
        assert wait_until(lambda: len(job_ids(cluster)) == 3, 60), cluster.jobs
        submits = cluster.command_counts["submit"]
        ids = job_ids(cluster)
        assert ids <= SLURM.queue_ids()
        time.sleep(10)  # demand unchanged, no worker ever connects: the counter stays
        assert cluster.command_counts["submit"] == submits
        assert job_ids(cluster) == ids
        assert adaptive.released_jobs == 0
        client.cancel(futures)
        del futures
        # no demand for the keep-warm time: the held jobs are cancelled
        assert wait_until(lambda: not cluster.workers, 60), cluster.jobs
        assert adaptive.released_jobs == 3
        assert wait_until(lambda: not (ids & SLURM.queue_ids()), 60)
        assert all(r.state == JobState.CANCELLED for r in cluster.jobs), cluster.jobs
        assert cluster.command_counts["submit"] == submits


def test_submit_failing_always_is_bounded_and_reported(fake_commands):  # noqa: F811
    message = "sbatch: error: Batch job submission failed: Invalid qos specification"
    fake_commands.fail_always("sbatch", stderr=message, rc=1)
    with dask.config.set({"jobqueue.slurm.submit-attempts": 1}):
        with make_cluster() as cluster, Client(cluster) as client:
            cluster.adapt(minimum_jobs=0, maximum_jobs=4, interval="500ms")
            futures = client.map(sleepy(0.5), range(40), pure=False)
            assert wait_until(lambda: fake_commands.calls("sbatch") >= 1, 30)
            time.sleep(10)  # twenty adapt intervals with the demand unchanged
            calls = fake_commands.calls("sbatch")
            print(f"sbatch calls while failing: {calls}")
            assert calls <= 4  # one per job at most, not one per interval
            with pytest.raises(CommandError, match="Invalid qos specification"):
                cluster.adapt(minimum_jobs=0, maximum_jobs=4, interval="500ms")
            del futures
