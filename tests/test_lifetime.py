"""Walltime handling: the pure plan (explicit clocks, no sleeps), reading walltimes, outage logs.

The end-to-end checks on the real batch systems are in ``test_real_lifetime.py``; one check
here runs a whole walltime cycle on the emulated PBS, which kills jobs at their walltime.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time

import dask
import pytest
from distributed import Client

from dask_jobqueue import CommandError, JobState, PBSCluster, SGECluster, SLURMCluster
from dask_jobqueue.dialects.pbs import parse_pbs_queue_walltime
from dask_jobqueue.dialects.sge import parse_sge_queue_h_rt
from dask_jobqueue.dialects.slurm import parse_scontrol_partitions
from dask_jobqueue.engine import PollAnswer
from dask_jobqueue.lifetime import LifetimePlanner, QueueWaits, default_margin, default_stagger
from dask_jobqueue.poller import JobPoller, PollInterval
from dask_jobqueue.tracker import JobTracker, Vanish
from dask_jobqueue.tracking import JobStatus
from dask_jobqueue.walltime import keyword_walltime

from .lifetime_stream import scheduler_worker_count
from .scheduler_suite import NO_DASHBOARD, emulator  # noqa: F401

# ---------------------------------------------------------------------------- defaults


@pytest.mark.parametrize(
    ("walltime", "margin"),
    [(120, 30), (600, 60), (3600, 180), (12 * 3600, 900), (48 * 3600, 900)],
)
def test_default_margin_scales_with_the_walltime(walltime, margin):
    assert default_margin(walltime) == margin
    # a short job still keeps most of its time for work
    assert default_margin(walltime) + default_stagger(walltime) <= 0.35 * walltime


def test_explicit_margin_and_stagger_must_leave_run_time():
    with pytest.raises(ValueError, match="leave no run time"):
        LifetimePlanner(120, margin=100, stagger=30)
    with pytest.raises(ValueError, match="walltime must be positive"):
        LifetimePlanner(0)


# ---------------------------------------------------------------------------- queue waits


def test_lead_is_a_high_percentile_of_observed_waits_with_a_floor():
    waits = QueueWaits(floor=10, percentile=90, factor=1.25)
    assert waits.lead() == 10  # nothing observed yet
    for wait in (2, 3, 2, 4, 3):
        waits.record(wait)
    assert waits.lead() == 10  # quick queue: the floor
    for wait in [20] * 5 + [3] * 10:
        waits.record(wait)
    # 20 waits: the 90th percentile is 20 s
    assert waits.lead() == pytest.approx(25)


def test_lead_forgets_old_waits():
    waits = QueueWaits(floor=1, keep=5)
    waits.record(100)
    for _ in range(5):
        waits.record(2)
    assert waits.lead() == pytest.approx(2.5)


# ---------------------------------------------------------------------------- plan


def test_replacement_goes_in_ahead_of_retirement_by_the_observed_wait():
    planner = LifetimePlanner(600, margin=60, stagger=0, waits=QueueWaits(floor=5))
    planner.connected("a", submitted_at=0, now=40)  # 40 s from submit to connected
    start = 45.0
    # retire at 45 + 600 - 60 = 585; lead 1.25 * 40 = 50 -> pre-submit at 535
    assert planner.due([("a", start)], 534.9) == ([], [])
    assert planner.due([("a", start)], 535.0) == (["a"], [])
    assert planner.due([("a", start)], 540.0) == ([], [])  # once only
    assert planner.due([("a", start)], 585.0) == ([], ["a"])
    assert planner.due([("a", start)], 590.0) == ([], [])


def test_connected_records_a_wait_once_per_job():
    planner = LifetimePlanner(600, waits=QueueWaits(floor=1))
    planner.connected("a", submitted_at=0, now=30)
    planner.connected("a", submitted_at=0, now=300)
    assert planner.waits.observed == [30]


def test_a_wait_longer_than_the_run_time_submits_at_start():
    planner = LifetimePlanner(120, waits=QueueWaits(floor=1))
    planner.connected("x", 0, 500)
    when = planner.deadlines("a", 1000)
    assert when.presubmit_at == 1000
    assert when.retire_at < when.end_at


def test_jobs_started_together_retire_spread_over_the_stagger():
    planner = LifetimePlanner(3600, margin=180, stagger=300)
    names = [f"job-{i}" for i in range(10)]
    retire = sorted(planner.deadlines(n, 0).retire_at for n in names)
    assert retire[-1] <= 3600 - 180
    assert retire[0] >= 3600 - 180 - 300
    gaps = [b - a for a, b in zip(retire, retire[1:], strict=False)]
    # golden-ratio spread: no two within 10 s of each other, none at the same moment
    assert min(gaps) > 10
    # the order a job was first seen fixes its offset
    assert planner.deadlines("job-3", 0) == planner.deadlines("job-3", 0)


def test_fixed_scale_keeps_n_jobs_through_many_walltimes():
    """Simulate a queue with a 20 s wait and 2 wanted jobs over 10 walltimes of 120 s:
    each replacement is connected before the job it replaces retires, and retirements
    happen before the walltime kill."""
    planner = LifetimePlanner(120, waits=QueueWaits(floor=10))
    queue_wait = 20.0
    jobs = {"j0": (0.0, 0.0), "j1": (0.0, 0.0)}  # name -> (submitted, started)
    started: dict[str, float] = {}
    connected_count = []
    counter = 2
    retired: dict[str, float] = {}
    for step in range(0, 1300):
        now = float(step)
        live = {}
        for name, (submitted, _) in jobs.items():
            if name in retired:
                continue
            if now >= submitted + queue_wait:
                started.setdefault(name, submitted + queue_wait)
                planner.connected(name, submitted, now)
                live[name] = started[name]
        connected_count.append(len(live))
        presubmit, retire = planner.due(live.items(), now)
        for _ in presubmit:
            jobs[f"j{counter}"] = (now, 0.0)
            counter += 1
        for name in retire:
            assert now < started[name] + 120, "retired after the walltime kill"
            retired[name] = now
            planner.forget(name)
    # after the first queue wait there are always at least 2 connected jobs
    assert min(connected_count[25:]) >= 2
    assert max(connected_count) <= 4
    assert len(retired) >= 18


# ---------------------------------------------------------------------------- walltimes

SCONTROL = (
    "PartitionName=debug AllowGroups=ALL Default=YES DefaultTime=00:02:00 MaxTime=UNLIMITED "
    "State=UP\n"
    "PartitionName=long AllowGroups=ALL Default=NO DefaultTime=NONE MaxTime=1-00:00:00 "
    "State=UP\n"
    "PartitionName=free AllowGroups=ALL Default=NO DefaultTime=NONE MaxTime=UNLIMITED\n"
)


def test_slurm_partition_default_walltime():
    assert parse_scontrol_partitions(SCONTROL, None) == 120
    assert parse_scontrol_partitions(SCONTROL, "debug") == 120
    assert parse_scontrol_partitions(SCONTROL, "long") == 86400
    assert parse_scontrol_partitions(SCONTROL, "free") is None
    assert parse_scontrol_partitions(SCONTROL, "nosuch") is None


def test_sge_queue_h_rt():
    assert parse_sge_queue_h_rt("qname all.q\nh_rt                  INFINITY\n") is None
    assert parse_sge_queue_h_rt("qname short.q\ns_rt INFINITY\nh_rt 0:10:0\n") == 600
    assert parse_sge_queue_h_rt("qname short.q\n") is None


def test_pbs_queue_walltime():
    text = (
        "Queue: workq\n    resources_max.walltime = 48:00:00\n"
        "    resources_default.walltime = 01:00:00\n"
    )
    assert parse_pbs_queue_walltime(text) == 3600
    assert parse_pbs_queue_walltime("Queue: workq\n    resources_max.walltime = 48:00:00\n") == (
        48 * 3600
    )
    assert parse_pbs_queue_walltime("Server: pbs\n    default_queue = workq\n") is None


def _template(cluster_cls, **kwargs):
    return cluster_cls.job_cls("tcp://127.0.0.1:8786", name="x", cores=1, memory="1GB", **kwargs)


def test_keyword_walltime_in_each_dialects_forms():
    assert keyword_walltime(_template(SLURMCluster, walltime="90")) == 90 * 60  # minutes
    assert keyword_walltime(_template(SLURMCluster, walltime="1-00:00:00")) == 86400
    assert keyword_walltime(_template(SGECluster, walltime="90")) == 90  # seconds
    assert keyword_walltime(_template(PBSCluster, walltime="01:30:00")) == 5400
    # Grid Engine sites ask for it in the resource list
    assert keyword_walltime(_template(SGECluster, resource_spec="h_vmem=4G,h_rt=0:30:0")) == 1800


# ---------------------------------------------------------------------------- outages


class _FlakyEngine:
    can_query = True

    def __init__(self):
        self.failing = False

    async def query(self, ids):
        if self.failing:
            raise CommandError(["squeue"], 1, stderr="squeue: error: Socket timed out")
        return {i: JobStatus(JobState.RUNNING) for i in ids}

    async def poll(self, ids):
        return PollAnswer(await self.query(ids))


def test_an_outage_logs_one_warning_and_one_recovery_line(caplog):
    engine = _FlakyEngine()
    tracker = JobTracker()
    tracker.add("job-0", "1", 1, time.time())
    poller = JobPoller(engine, tracker, PollInterval(), lambda: {"job-0": 1}, lambda: None, _no_end)
    caplog.set_level(logging.DEBUG, logger="dask_jobqueue.poller")
    asyncio.run(poller.poll_once())
    engine.failing = True
    for _ in range(150):
        asyncio.run(poller.poll_once())
    engine.failing = False
    asyncio.run(poller.poll_once())
    engine.failing = True
    asyncio.run(poller.poll_once())  # a second outage warns again
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2, [r.getMessage() for r in warnings]
    assert "job states unchanged" in warnings[0].getMessage()
    recovered = [r.getMessage() for r in caplog.records if "work again" in r.getMessage()]
    assert len(recovered) == 1 and "150 polls without an answer" in recovered[0]
    assert poller.failed_polls == 151
    assert [r.state for r in tracker.live] == [JobState.CONNECTED]


async def _no_end(ended):
    raise AssertionError(f"no job may end during an outage: {ended}")


class _SilentEngine:
    """A status command that lists nothing, exit code 0, while ``silent``."""

    can_query = True

    def __init__(self):
        self.silent = False
        self.polls = 0

    async def poll(self, ids):
        self.polls += 1
        if self.silent:
            return PollAnswer({})
        return PollAnswer({i: JobStatus(JobState.QUEUED, "Resources") for i in ids})


def test_a_silent_listing_logs_one_warning_and_ends_nothing(caplog):
    """Six queued jobs, 150 polls listing none of them: one warning, none ended (``_no_end``
    would raise), and one recovery line once they are listed again."""
    engine = _SilentEngine()
    tracker = JobTracker(Vanish(polls=3, seconds=0.0))  # no grace at all: only the rule holds
    for k in range(6):
        tracker.add(f"job-{k}", str(k), 1, time.time())
    poller = JobPoller(engine, tracker, PollInterval(), dict, lambda: None, _no_end)
    caplog.set_level(logging.DEBUG, logger="dask_jobqueue.poller")
    asyncio.run(poller.poll_once())
    engine.silent = True
    for _ in range(150):
        asyncio.run(poller.poll_once())
    assert len(tracker) == 6 and poller.outage_since is not None
    assert {r.state for r in tracker.live} == {JobState.QUEUED}
    engine.silent = False
    asyncio.run(poller.poll_once())
    assert engine.polls == 152 and poller.outage_since is None
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1, warnings
    assert "lists none of this cluster's 6 job(s)" in warnings[0]
    recovered = [r.getMessage() for r in caplog.records if "work again" in r.getMessage()]
    assert len(recovered) == 1 and "150 polls without an answer" in recovered[0]
    assert [r.reason for r in tracker.live] == ["Resources"] * 6


def test_stop_right_after_a_wakeup_returns():
    """``wake()`` then ``stop()`` in one loop iteration: on Python 3.10/3.11
    ``asyncio.wait_for`` returned the wake-up and swallowed the cancellation, and ``stop()``
    waited forever. The guard turns a hang into a failure."""

    async def scenario():
        engine = _SilentEngine()
        tracker = JobTracker()
        tracker.add("job-0", "1", 1, time.time())
        poller = JobPoller(engine, tracker, PollInterval(3600, 3600), dict, lambda: None, _no_end)
        poller.start()
        for _ in range(3):  # let the loop reach its wait
            await asyncio.sleep(0)
        for _ in range(20):
            poller.wake()
            stopping = asyncio.ensure_future(poller.stop())
            done, _ = await asyncio.wait({stopping}, timeout=10)
            assert stopping in done, "stop() did not return"
            # the polling loop ended: nothing but this test runs on the loop
            assert asyncio.all_tasks() == {asyncio.current_task()}
            poller.start()
            for _ in range(3):
                await asyncio.sleep(0)
        await asyncio.wait_for(poller.stop(), timeout=10)

    asyncio.run(scenario())


# ---------------------------------------------------------------------------- emulated PBS


# the emulated PBS family runs under -E torque (-E pbs is the real OpenPBS)
@pytest.mark.env("torque")
class TestEmulatedWalltime:
    """A whole walltime cycle on the emulated PBS, which kills a job at its walltime."""

    emulator_flavour = "pbs"

    def test_scale_keeps_workers_through_walltimes(self, emulator, caplog):  # noqa: F811
        caplog.set_level(logging.INFO, logger="dask_jobqueue")
        with (
            dask.config.set(
                {"jobqueue.pbs.poll-interval": "300ms", "jobqueue.pbs.poll-interval-max": "1s"}
            ),
            PBSCluster(
                cores=1,
                memory="1GB",
                processes=1,
                walltime="00:00:40",
                scheduler_options=NO_DASHBOARD,
            ) as cluster,
            Client(cluster) as client,
        ):
            cluster.scale(2)
            client.wait_for_workers(2, timeout=60)
            samples = _sample_workers(client, seconds=75)
            assert cluster._lifetime is not None
            ended = [r for r in cluster.jobs if r.state.is_final]
            # at least the two first jobs were retired and replaced ahead of the kill
            assert len(ended) >= 2, repr(cluster.jobs)
            assert all(r.state == JobState.CANCELLED for r in ended), repr(cluster.jobs)
            assert not any(r.error for r in cluster.jobs)
            assert max(_zero_runs(samples), default=0) < 1.0, _zero_runs(samples)
            assert client.submit(lambda: 7).result(timeout=30) == 7
        assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


def _sample_workers(client, seconds: float, interval: float = 0.25) -> list[tuple[float, int]]:
    samples = []
    stop = threading.Event()
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and not stop.is_set():
        samples.append((time.monotonic(), scheduler_worker_count(client)))
        time.sleep(interval)
    return samples


def _zero_runs(samples: list[tuple[float, int]]) -> list[float]:
    runs, since = [], None
    for t, n in samples:
        if n == 0 and since is None:
            since = t
        elif n and since is not None:
            runs.append(t - since)
            since = None
    if since is not None:
        runs.append(samples[-1][0] - since)
    return runs


def test_too_short_a_run_is_not_replaced_ahead():
    # 20 s walltime: a 5 s margin leaves 15 s of run, less than twice the 10 s floor lead:
    # the job is left to end at its walltime (no overlapping replacements).
    planner = LifetimePlanner(20.0)
    assert planner.deadlines("a", 0.0).retire_at == 15.0
    for now in (0.0, 10.0, 15.0, 19.0):
        assert planner.due([("a", 0.0)], now) == ([], [])
    # a long enough walltime is handled
    planner = LifetimePlanner(600.0)
    presubmit, retire = planner.due([("a", 0.0)], 599.0)
    assert presubmit == ["a"] and retire == ["a"]
