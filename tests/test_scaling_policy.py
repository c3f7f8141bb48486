"""The adaptive scaling policy, decided without a cluster: time and demand are given.

Each scenario is a table of ticks ``(now, wanted_workers, jobs)`` where ``jobs`` is a string,
one letter per planned job (oldest first): ``q`` queued (no worker connected), ``i`` running
and idle, ``b`` running and busy. Job names are their positions unless a scenario names them.
"""

from __future__ import annotations

import math

import pytest

from dask_jobqueue.scaling_policy import (
    JobScalingPolicy,
    JobView,
    ScalingDecision,
    jobs_for_workers,
)


def views(states: str, names: list[str] | None = None) -> list[JobView]:
    names = names or [f"job-{k}" for k in range(len(states))]
    return [
        JobView(name, workers_connected=0 if s == "q" else 1, busy=s == "b")
        for name, s in zip(names, states, strict=True)
    ]


def run(policy, ticks, workers_per_job=1):
    """The decisions of ``policy`` at each tick, as (submit, release) pairs."""
    out = []
    for now, wanted_workers, states in ticks:
        decision = policy.decide(now, wanted_workers, workers_per_job, views(states))
        out.append((decision.submit, decision.release))
    return out


SAME = (0, ())


@pytest.mark.parametrize(
    "limits, ticks, workers_per_job, expected",
    [
        pytest.param((0, 4), [(0, 3, "")], 1, [(3, ())], id="up-from-nothing"),
        pytest.param((0, 4), [(0, 40, "")], 1, [(4, ())], id="up-to-the-maximum"),
        pytest.param((0, 2), [(0, 6, "")], 4, [(2, ())], id="workers-rounded-up-to-jobs"),
        pytest.param((0, 2), [(0, 5, "q")], 4, [(1, ())], id="one-more-whole-job"),
        pytest.param((1, 4), [(0, 0, "")], 1, [(1, ())], id="the-minimum-is-submitted"),
        pytest.param(
            (0, 4),
            [(0, 4, "qqqq"), (1, 4, "qqqb"), (2, 4, "qbbb")],
            1,
            [SAME] * 3,
            id="queued-count",
        ),
        pytest.param((0, 4), [(0, 4, "qqbb")], 1, [SAME], id="queued-are-capacity-coming"),
        pytest.param(
            (0, 4),
            [(0, 0, "ii"), (59.9, 0, "ii"), (60, 0, "ii")],
            1,
            [SAME, SAME, (0, ("job-0", "job-1"))],
            id="keep-warm-then-release",
        ),
        pytest.param(
            (1, 4),
            [(0, 0, "ii"), (60, 0, "ii"), (1000, 0, "i")],
            1,
            [SAME, (0, ("job-0",)), SAME],
            id="minimum-kept-warm-forever",
        ),
        pytest.param(
            (0, 4),
            [(0, 1, "bi"), (60, 1, "bi"), (61, 1, "b")],
            1,
            [SAME, (0, ("job-1",)), SAME],
            id="only-the-idle-job-goes",
        ),
        pytest.param(
            (0, 4),
            [(0, 0, "bb"), (100, 0, "bb"), (101, 0, "ib"), (160, 0, "ib"), (161, 0, "ib")],
            1,
            [SAME, SAME, SAME, SAME, (0, ("job-0",))],
            id="busy-jobs-are-never-released",
        ),
        pytest.param(
            (0, 4),
            [(0, 1, "iq"), (60, 1, "iq")],
            1,
            [SAME, (0, ("job-1",))],
            id="queued-released-before-running",
        ),
        pytest.param(
            (0, 4),
            [(0, 0, "iqq"), (60, 0, "iqq")],
            1,
            [SAME, (0, ("job-2", "job-1", "job-0"))],
            id="queued-newest-first-then-running",
        ),
        pytest.param(
            (0, 4),
            [(0, 1, "bqqq"), (60, 1, "bqqq")],
            1,
            [SAME, (0, ("job-3", "job-2", "job-1"))],
            id="queued-go-even-while-others-work",
        ),
        pytest.param(
            (0, 4),
            [(0, 0, "ii"), (30, 2, "ii"), (40, 0, "ii"), (90, 0, "ii"), (100, 0, "ii")],
            1,
            [SAME, SAME, SAME, SAME, (0, ("job-0", "job-1"))],
            id="a-surplus-must-last-unbroken",
        ),
        pytest.param(
            (0, 4),
            [(0, 0, "ii"), (50, 0, "bi"), (51, 0, "ii"), (100, 0, "ii"), (111, 0, "i")],
            1,
            [SAME, SAME, SAME, (0, ("job-1",)), (0, ("job-0",))],
            id="a-task-restarts-the-idle-clock",
        ),
        pytest.param(
            (0, 4),
            [(0, 1, "bi"), (10, 1, "ii"), (70, 1, "ii")],
            1,
            [SAME, SAME, (0, ("job-1",))],
            id="idle-longest-goes-first",
        ),
        pytest.param(
            (0, 4),
            [(0, 0, "ii"), (60, 0, "ii")],
            4,
            [SAME, (0, ("job-0", "job-1"))],
            id="several-workers-per-job-release-whole-jobs",
        ),
    ],
)
def test_decisions(limits, ticks, workers_per_job, expected):
    policy = JobScalingPolicy(*limits, idle_timeout=60.0)
    assert run(policy, ticks, workers_per_job) == expected


def test_a_decision_never_submits_and_releases_at_once():
    policy = JobScalingPolicy(0, 10, idle_timeout=1.0)
    for states in ("", "q", "i", "b", "qi", "ib", "qqiibb"):
        for wanted in range(0, 8):
            for now in (0.0, 5.0):
                decision = policy.decide(now, wanted, 1, views(states))
                assert not (decision.submit and decision.release)
                assert len(decision.release) <= len(states)


def test_burst_idle_burst_keeps_its_jobs():
    """Issue 18: 40 half-second tasks, 30 s idle, 40 more, adapt(maximum_jobs=4), one tick
    a second. The four jobs of the first burst serve the second; released 60 s after it."""
    policy = JobScalingPolicy(0, 4, idle_timeout=60.0)
    submitted = released = 0
    release_times = []
    jobs: list[str] = []  # states of the planned jobs
    names: list[str] = []
    for now in range(0, 200):
        burst = now < 10 or 40 <= now < 50
        wanted = 4 if burst else 0
        if now < 3:  # the first jobs wait 3 s in the queue
            jobs = ["q"] * len(jobs)
        else:
            jobs = ["b" if burst else "i"] * len(jobs)
        decision = policy.decide(float(now), wanted, 1, views("".join(jobs), names))
        submitted += decision.submit
        names += [f"job-{submitted - k}" for k in range(decision.submit, 0, -1)]
        jobs += ["q"] * decision.submit
        for name in decision.release:
            released += 1
            release_times.append(now)
            del jobs[names.index(name)]
            names.remove(name)
    assert submitted == 4
    assert released == 4
    assert release_times == [110] * 4  # 60 s after the second burst ended


def simulate_pending_tasks(maximum_workers: int, processes: int, tasks: int, task_seconds: float):
    """300 short tasks on jobs of ``processes`` workers; the demand is what distributed's
    adaptive_target asks (remaining work over a 5 s target duration, clipped to the maximum
    in workers as Adaptive.safe_target does). Returns (submits, releases while pending)."""
    policy = JobScalingPolicy(0, jobs_for_workers(maximum_workers, processes), idle_timeout=60.0)
    remaining = tasks
    planned: list[tuple[str, float]] = []  # (name, connected at)
    submits = releases_while_pending = 0
    for tick in range(0, 120):
        now = float(tick)
        running = [name for name, at in planned if at <= now]
        workers = len(running) * processes
        remaining = max(remaining - int(workers / task_seconds), 0)
        wanted = min(math.ceil(remaining * task_seconds / 5.0), maximum_workers)
        if remaining == 0 and workers:
            # all done: the scheduler asks only for the workers that hold data
            wanted = 0
        jobs = [
            JobView(name, processes if at <= now else 0, busy=at <= now and remaining > 0)
            for name, at in planned
        ]
        decision = policy.decide(now, wanted, processes, jobs)
        for _ in range(decision.submit):
            submits += 1
            planned.append((f"job-{submits}", now + 4.0))  # 4 s in the queue
        if remaining:
            releases_while_pending += len(decision.release)
        planned = [(n, at) for n, at in planned if n not in decision.release]
    assert remaining == 0
    return submits, releases_while_pending


@pytest.mark.parametrize("maximum", [6, 8])
def test_no_submit_cancel_loop_with_several_processes_per_job(maximum):
    """dask-jobqueue #498: cores=4, processes=4, adapt(maximum=6 or 8), 300 0.2-s tasks."""
    submits, releases = simulate_pending_tasks(maximum, 4, 300, 0.2)
    assert submits <= 2
    assert releases == 0


def test_lifetime_replacements_are_neither_doubled_nor_cancelled():
    """dask-jobqueue #691: workers leave at their --lifetime; their job ends and the cluster
    replaces it under a new name. Meanwhile the demand holds: adapt submits nothing more
    and cancels nothing, however long the replacement waits in the queue."""
    policy = JobScalingPolicy(0, 2, idle_timeout=5.0)
    timeline = [
        (0, ["a", "b"], "bb"),
        (10, ["a", "b"], "qb"),  # a's workers left at their lifetime; the job still listed
        (12, ["b", "a2"], "bq"),  # a ended; the cluster's replacement is queued
        (30, ["b", "a2"], "bq"),  # still queued 18 s later (longer than idle_timeout)
        (40, ["b", "a2"], "qb"),  # a2 connected; now b's workers leave
        (42, ["a2", "b2"], "bq"),
        (50, ["a2", "b2"], "bb"),
    ]
    decisions = [
        policy.decide(float(now), 8, 4, views(states, names)) for now, names, states in timeline
    ]
    assert all(d.same for d in decisions), decisions


def test_idle_clock_is_per_job_and_forgets_jobs_gone():
    policy = JobScalingPolicy(0, 4, idle_timeout=60.0)
    policy.decide(0.0, 2, 1, views("ib", ["a", "b"]))
    assert (policy.idle_for("a", 30.0), policy.idle_for("b", 30.0)) == (30.0, 0.0)
    policy.decide(40.0, 2, 1, views("b", ["b"]))
    policy.decide(50.0, 2, 1, views("bi", ["b", "a"]))  # a name seen again starts afresh
    assert policy.idle_for("a", 60.0) == 10.0


def test_unbounded_maximum():
    policy = JobScalingPolicy(0, math.inf, idle_timeout=1.0)
    assert policy.decide(0.0, 1000, 4, []) == ScalingDecision(wanted=250, submit=250)
    assert jobs_for_workers(math.inf, 4) == math.inf


@pytest.mark.parametrize(
    "kwargs, words",
    [
        ({"minimum_jobs": -1, "maximum_jobs": 2, "idle_timeout": 1}, "minimum_jobs=-1"),
        ({"minimum_jobs": 3, "maximum_jobs": 2, "idle_timeout": 1}, "maximum_jobs=2"),
        ({"minimum_jobs": 0, "maximum_jobs": 2, "idle_timeout": 0}, "idle_timeout=0"),
    ],
)
def test_refuses_nonsense(kwargs, words):
    with pytest.raises(ValueError, match=words):
        JobScalingPolicy(**kwargs)
