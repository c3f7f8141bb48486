"""The supervisor on its own: a fake engine and a fake cluster, no subprocess, no sleep.

What is checked is what a user would see: which jobs are wanted afterwards (under which
names), which ids were cancelled, which error the next ``scale()`` raises.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Sequence

import pytest

from dask_jobqueue.job import JobFailedError
from dask_jobqueue.options import EngineSettings
from dask_jobqueue.slurm import SLURMJob
from dask_jobqueue.supervisor import JobSupervisor
from dask_jobqueue.tracker import Vanish
from dask_jobqueue.tracking import JobState, JobStatus

ADDRESS = "tcp://127.0.0.1:8786"


class FakeEngine:
    """Accepts every submission (ids 100, 101, …) unless told to refuse; records cancels."""

    def __init__(self) -> None:
        self.ids = itertools.count(100)
        self.refuse: Exception | None = None
        self.cancelled: list[str] = []
        self.released: list[str] = []
        self.live_ids: set[str] = set()
        self.refused_cancels: set[str] = set()
        self.can_query = False
        self.commands = {"submit": 0, "status": 0, "cancel": 0}

    async def submit_many(self, jobs: Sequence[SLURMJob]) -> list[str | BaseException]:
        self.commands["submit"] += 1
        results: list[str | BaseException] = []
        for job in jobs:
            if self.refuse is not None:
                results.append(self.refuse)
                continue
            job.job_id = str(next(self.ids))
            self.live_ids.add(job.job_id)
            results.append(job.job_id)
        return results

    async def cancel(self, job_ids: Sequence[str]) -> list[str]:
        """Cancels all but the ids in ``refused_cancels``, which stay live (left behind)."""
        self.commands["cancel"] += 1
        done = [i for i in job_ids if i not in self.refused_cancels]
        self.cancelled.extend(done)
        self.live_ids.difference_update(done)
        return [i for i in job_ids if i in self.refused_cancels]

    def release(self, job_ids: Sequence[str]) -> None:
        self.released.extend(job_ids)
        self.live_ids.difference_update(job_ids)

    def cancel_sync(self) -> None:
        self.cancelled.extend(sorted(self.live_ids))
        self.live_ids.clear()

    async def cancel_unsettled(self) -> None:
        return None

    def close(self) -> None:
        return None


class FakeCluster:
    """The SpecCluster side: wanted jobs, running jobs, fresh names, corrections counted."""

    def __init__(self, wanted: int) -> None:
        self.names = (f"job-{i}" for i in itertools.count())
        self.worker_spec: dict[str, dict] = {next(self.names): {} for _ in range(wanted)}
        self.workers: dict[str, SLURMJob] = {}
        self.closing = False
        self.corrections_later: list[float] = []
        self.retired: list[str] = []
        self.closed_on_retire: list[str] = []

    def new_job_name(self) -> str:
        return next(self.names)

    def connected_workers(self) -> dict[str, int]:
        return {}

    async def retire_job_workers(self, names: Sequence[str], close: bool = False) -> None:
        self.retired.extend(names)
        self.closed_on_retire.extend(names if close else [])

    async def correct_state(self) -> None:
        return None

    def correct_state_later(self, delay: float) -> None:
        self.corrections_later.append(delay)


def make(wanted: int = 2, failures: int = 3) -> tuple[FakeCluster, FakeEngine, JobSupervisor]:
    cluster, engine = FakeCluster(wanted), FakeEngine()
    settings = EngineSettings(owner_watchdog=False, max_consecutive_failures=failures)
    supervisor = JobSupervisor(cluster, engine, settings, Vanish(), workers_per_job=1)  # type: ignore[arg-type]
    return cluster, engine, supervisor


async def start_wanted(cluster: FakeCluster, supervisor: JobSupervisor) -> None:
    built = [
        (name, SLURMJob(ADDRESS, name=name, cores=1, memory="1GB")) for name in cluster.worker_spec
    ]
    for name, job in await supervisor.start_jobs(built):
        cluster.workers[name] = job


def ended(supervisor: JobSupervisor, name: str, state: JobState, connected: bool):
    record = supervisor.tracker.by_name(name)
    assert record is not None
    if connected:
        record.set_connected_workers(1, 0.0)
    status = JobStatus(state, "test")
    record.apply(status, 1.0)
    return record, status


def test_a_job_that_ran_and_ended_is_replaced_at_once_under_a_new_name():
    async def scenario():
        cluster, engine, supervisor = make()
        await start_wanted(cluster, supervisor)
        await supervisor.jobs_ended([ended(supervisor, "job-0", JobState.FINISHED, connected=True)])
        return cluster, engine, supervisor

    cluster, engine, supervisor = asyncio.run(scenario())
    assert list(cluster.worker_spec) == ["job-1", "job-2"]
    assert "job-0" not in cluster.workers
    assert engine.released == ["100"] and engine.cancelled == []
    assert len(cluster.corrections_later) == 1 and cluster.corrections_later[0] < 0.1
    assert supervisor.pending_error is None


def test_deaths_before_connecting_back_off_then_open_the_breaker():
    async def scenario():
        cluster, engine, supervisor = make(wanted=1, failures=2)
        await start_wanted(cluster, supervisor)
        await supervisor.jobs_ended([ended(supervisor, "job-0", JobState.FAILED, connected=False)])
        # the replacement (job-1) is submitted and dies too
        await start_wanted(cluster, supervisor)
        await supervisor.jobs_ended([ended(supervisor, "job-1", JobState.FAILED, connected=False)])
        return cluster, engine, supervisor

    cluster, engine, supervisor = asyncio.run(scenario())
    # failed jobs are cancelled before anything replaces them
    assert engine.cancelled == ["100", "101"]
    # one delayed replacement (the backoff), then the breaker: no second replacement
    assert len(cluster.corrections_later) == 1 and cluster.corrections_later[0] >= 1.0
    assert not supervisor.may_submit("job-1", now=float("inf"))
    with pytest.raises(JobFailedError, match="2 jobs in a row ended before their workers"):
        supervisor.raise_if_failed()
    assert isinstance(supervisor.take_pending_error(), JobFailedError)
    assert supervisor.may_submit("job-1", now=float("inf"))  # the user asked again


@pytest.mark.parametrize(
    ("state", "stuck", "stays_live"),
    [
        (JobState.FAILED, False, False),  # the batch system says it ended: nothing runs
        (JobState.FAILED, True, True),  # kept by the batch system in an error state
        (JobState.LOST, False, True),  # gone from the listings: it may still run
    ],
)
def test_a_refused_cleanup_cancel_keeps_only_jobs_that_may_still_run(state, stuck, stays_live):
    """The cancel of a failed job is refused ("job is not active"): a job the batch system
    reports ended is no longer live (no retry at close or by the watchdog); a lost or stuck
    one stays live, for them to cancel."""

    async def scenario():
        cluster, engine, supervisor = make(wanted=1)
        await start_wanted(cluster, supervisor)
        engine.refused_cancels.add("100")
        record, status = ended(supervisor, "job-0", state, connected=False)
        status = JobStatus(state, "test", stuck=stuck)
        await supervisor.jobs_ended([(record, status)])
        return engine

    engine = asyncio.run(scenario())
    assert engine.commands["cancel"] == 1  # the cleanup cancel was tried
    assert ("100" in engine.live_ids) is stays_live


def test_a_job_scaled_away_is_not_replaced_when_it_ends():
    async def scenario():
        cluster, engine, supervisor = make()
        await start_wanted(cluster, supervisor)
        del cluster.worker_spec["job-0"]
        await supervisor.jobs_ended([ended(supervisor, "job-0", JobState.FINISHED, connected=True)])
        return cluster

    cluster = asyncio.run(scenario())
    assert list(cluster.worker_spec) == ["job-1"]
    assert cluster.corrections_later == []


def test_a_refused_submission_is_kept_for_the_next_scale_and_tracks_nothing():
    async def scenario():
        cluster, engine, supervisor = make()
        engine.refuse = RuntimeError("sbatch: error: invalid partition")
        accepted = await supervisor.start_jobs(
            [(n, SLURMJob(ADDRESS, name=n, cores=1, memory="1GB")) for n in cluster.worker_spec]
        )
        return accepted, supervisor

    accepted, supervisor = asyncio.run(scenario())
    assert accepted == []
    assert len(supervisor.tracker) == 0
    with pytest.raises(RuntimeError, match="invalid partition"):
        supervisor.raise_if_failed()


def test_stopped_jobs_are_retired_cancelled_and_not_taken_for_deaths():
    async def scenario():
        cluster, engine, supervisor = make()
        await start_wanted(cluster, supervisor)
        jobs = [(name, cluster.workers.pop(name)) for name in ["job-0", "job-1"]]
        await supervisor.stop_jobs(jobs, "scaled down")
        return cluster, engine, supervisor

    cluster, engine, supervisor = asyncio.run(scenario())
    assert cluster.retired == ["job-0", "job-1"]
    assert engine.cancelled == ["100", "101"] and engine.commands["cancel"] == 1
    assert len(supervisor.tracker) == 0
    assert [(r.job_id, r.state, r.reason) for r in supervisor.tracker.ended] == [
        ("100", JobState.CANCELLED, "scaled down"),
        ("101", JobState.CANCELLED, "scaled down"),
    ]


def test_scale_down_drops_jobs_without_workers_first_newest_first():
    async def scenario():
        cluster, engine, supervisor = make(wanted=4)
        await start_wanted(cluster, supervisor)
        for name in ("job-0", "job-2"):
            record = supervisor.tracker.by_name(name)
            assert record is not None
            record.set_connected_workers(1, 0.0)
        return supervisor.drop_order(list(cluster.worker_spec))

    assert asyncio.run(scenario()) == ["job-3", "job-1", "job-2", "job-0"]


def test_replace_moves_the_spec_and_refuses_a_job_no_longer_wanted():
    cluster, _, supervisor = make(wanted=1)
    cluster.worker_spec["job-0"] = {"options": {"cores": 1}}
    assert supervisor.replace("job-0") == "job-1"
    assert cluster.worker_spec == {"job-1": {"options": {"cores": 1}}}
    assert supervisor.replace("job-0") is None


def test_closing_stops_replacing():
    async def scenario():
        cluster, engine, supervisor = make()
        await start_wanted(cluster, supervisor)
        cluster.closing = True
        await supervisor.jobs_ended([ended(supervisor, "job-0", JobState.FINISHED, connected=True)])
        return cluster

    cluster = asyncio.run(scenario())
    assert list(cluster.worker_spec) == ["job-0", "job-1"]  # nothing moved, nothing resubmitted
    assert cluster.corrections_later == []
