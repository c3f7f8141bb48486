"""Many jobs and rate-limited sites: the command budget, per-poll work that stays linear."""

from __future__ import annotations

import asyncio

import pytest

from dask_jobqueue.engine import CommandBudget, StatusStep
from dask_jobqueue.policy import FailurePolicy
from dask_jobqueue.slurm import SLURMJob
from dask_jobqueue.tracking import JobRecord, JobState, JobStatus

from .fakes import cancel, engine_with, query


def test_command_budget_lets_a_burst_through_then_paces():
    now = [0.0]
    budget = CommandBudget(per_minute=6, burst=3, clock=lambda: now[0])
    assert [budget.reserve() for _ in range(5)] == pytest.approx([0, 0, 0, 10, 20])
    now[0] = 60.0  # six tokens back, two of them owed
    assert budget.reserve() == pytest.approx(0)
    assert [budget.reserve() for _ in range(3)] == pytest.approx([0, 0, 10])
    now[0] = 10_000.0  # never more than the burst saved up
    assert [budget.reserve() for _ in range(4)] == pytest.approx([0, 0, 0, 10])


@pytest.mark.parametrize(
    "per_minute, burst, words",
    [(0, 3, "command_rate_limit=0"), (6, 0, "command_burst=0")],
)
def test_command_budget_refuses_nonsense(per_minute, burst, words):
    with pytest.raises(ValueError, match=words):
        CommandBudget(per_minute, burst)


def test_every_command_waits_for_the_budget(monkeypatch):
    """Submit, status (squeue, sacct) and cancel commands each take one token."""

    def answers(argv):
        if argv[0] == "squeue":
            return "11|11|N/A|PENDING|Resources|0|\n"
        if argv[0] == "sacct":
            return ""
        if argv[0] == "scancel":
            return ""
        raise AssertionError(argv)

    engine, runner = engine_with(
        SLURMJob(cores=1, memory="1GB"),
        answers,
        submitted=["Submitted batch job 11\n", "Submitted batch job 12\n"],
        command_rate_limit=6,
        command_burst=2,
    )
    taken = []
    reserve = engine.budget.reserve
    monkeypatch.setattr(engine.budget, "reserve", lambda: taken.append(1) or reserve())
    query(engine, ["11", "12"])  # squeue, then sacct for 12
    assert cancel(engine, ["11", "12"]) == []
    assert [c[0] for c in runner.calls] == ["squeue", "sacct", "scancel"]
    assert len(taken) == len(runner.calls) == 3
    # the two submissions spent the burst: each later command waited its turn
    assert engine.budget.reserve() == pytest.approx(40.0, abs=1.0)


def test_without_a_budget_nothing_waits():
    engine, runner = engine_with(SLURMJob(cores=1, memory="1GB"), lambda argv: "")
    assert engine.budget is None


def test_policy_decides_for_thousands_of_ended_jobs_in_one_poll():
    """Replacement slots for 20,000 jobs that ended at once: each within the cap."""
    policy = FailurePolicy(window=60.0)
    delays = []
    for k in range(20_000):
        record = JobRecord(name=f"w-{k}", job_id=str(k))
        record.ever_connected = True
        decision = policy.job_ended(record, JobStatus(JobState.FINISHED), True, 0.0, cap=5_000)
        delays.append(decision.delay)
    assert delays[:5_000] == [0.0] * 5_000
    assert delays[5_000:10_000] == [60.0] * 5_000
    assert delays[-1] == 180.0


def test_many_missing_ids_are_one_accounting_command():
    """Slurm: the ids squeue no longer lists go to one sacct, however many."""
    ids = [str(100 + k) for k in range(5_000)]

    def answers(argv):
        if argv[0] == "squeue":
            return ""
        if argv[0] == "sacct":
            return "".join(f"{i}|COMPLETED|0:0\n" for i in ids[::2])
        raise AssertionError(argv)

    engine, runner = engine_with(SLURMJob(cores=1, memory="1GB"), answers)
    statuses = query(engine, ids)
    assert [c[0] for c in runner.calls] == ["squeue", "sacct"]
    assert len(statuses) == 2_500


def test_big_status_output_is_parsed_off_the_loop(monkeypatch):
    """Output of tens of thousands of lines is parsed in another thread (the event loop
    also serves the Dask scheduler); the answer is the same."""
    ids = [f"7_{k}" for k in range(20_000)]
    listing = "".join(f"7_{k}|7|{k}|PENDING|Resources|0|\n" for k in range(20_000))
    engine, runner = engine_with(SLURMJob(cores=1, memory="1GB"), lambda argv: listing)
    threads = []
    step = SLURMJob.status_steps[0]
    parse = step.parse

    def recording_parse(stdout, job_ids, known):
        import threading

        threads.append(threading.current_thread() is threading.main_thread())
        return parse(stdout, job_ids, known)

    monkeypatch.setattr(
        SLURMJob, "status_steps", (StatusStep("squeue", step.argv, recording_parse),)
    )
    statuses = asyncio.run(engine.query(ids))
    assert threads == [False]
    assert len(statuses) == 20_000 and statuses["7_5"].state == JobState.QUEUED
