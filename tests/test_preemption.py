"""Preempted, requeued and suspended jobs, without a batch system: the parsers on outputs
recorded from real schedulers, the tracker and the policy with injected times, and the
supervisor with a fake engine and cluster.

Provenance of the outputs read here:

* ``tests/data/slurm_multi/squeue_ours_*.txt``: real Slurm 22.05.8 (the multi-node cluster of
  ``ci/slurm-multi``), the cluster's own ``squeue`` command (see that directory's README);
* ``tests/data/preemption/sge_*.xml``: real Grid Engine of ``ci/sge`` (``qmod -sj`` on a
  running job; ``qmod -rj`` on a running ``qsub -r y`` job), ``qstat -xml``;
* ``tests/data/preemption/pbs_*.json``: real OpenPBS of ``ci/pbs`` (``qsig -s suspend``;
  ``qrerun``, after which the job runs again at once), ``qstat -f -F json``;
* LSF and HTCondor run emulated here: their rows are written from the documented meaning of
  ``bjobs`` states (``PSUSP``/``USUSP``/``SSUSP``, ``TERM_PREEMPT``) and of the job ClassAd
  attributes ``JobStatus``, ``NumJobStarts`` and ``LastVacateTime``.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from dask_jobqueue.dialects.htcondor import condor_status
from dask_jobqueue.dialects.lsf import lsf_status
from dask_jobqueue.dialects.pbs import parse_qstat_json
from dask_jobqueue.dialects.sge import parse_qstat_xml, sge_state
from dask_jobqueue.dialects.slurm import parse_sacct, parse_squeue
from dask_jobqueue.policy import FailurePolicy, InterruptionDecision
from dask_jobqueue.tracker import JobTracker
from dask_jobqueue.tracking import Interruption, JobState, JobStatus, JobTable

from .test_supervisor import make, start_wanted

DATA = Path(__file__).parent / "data"
SLURM = DATA / "slurm_multi"
RECORDED = DATA / "preemption"

RUNNING = JobStatus(JobState.RUNNING, None, None, "RUNNING")


# ---------------------------------------------------------------- parsers, recorded outputs


def test_slurm_running_job_with_a_preempt_time_is_preempted():
    statuses = parse_squeue((SLURM / "squeue_ours_preempt_running.txt").read_text())
    victim = statuses["5000031_0"]
    assert (victim.state, victim.interruption) == (JobState.RUNNING, Interruption.PREEMPTED)
    assert victim.interrupted_at == "2026-12-07T15:52:29"
    for other in ("5000031_1", "5000031_2"):
        assert statuses[other].state == JobState.RUNNING
        assert statuses[other].interruption is None and statuses[other].interrupted_at is None


def test_slurm_requeued_job_waits_held_until_its_begin_time():
    statuses = parse_squeue((SLURM / "squeue_ours_requeued_held.txt").read_text())
    requeued = statuses["5000039_0"]
    # squeue says nothing of a requeue: the tracker sees a job that ran waiting again
    assert (requeued.state, requeued.reason) == (JobState.HELD, "BeginTime")
    assert statuses["5000039_1"].state == JobState.RUNNING


@pytest.mark.parametrize("preempt_time", ["N/A", "None", "Unknown", ""])
def test_slurm_preempt_time_placeholders_mean_not_preempted(preempt_time):
    (status,) = parse_squeue(f"7|7|N/A|RUNNING|None|0|{preempt_time}|\n").values()
    assert status.state == JobState.RUNNING and status.interruption is None


def test_slurm_earlier_squeue_forms_without_preempt_time_still_parse():
    statuses = parse_squeue("7|7|N/A|RUNNING|None|0|\n8|RUNNING|None|0|\n9|PENDING|Priority\n")
    assert {i: s.state for i, s in statuses.items()} == {
        "7": JobState.RUNNING,
        "8": JobState.RUNNING,
        "9": JobState.QUEUED,
    }
    assert all(s.interruption is None for s in statuses.values())


def test_slurm_preempted_final_state_and_suspension():
    (ended,) = parse_sacct("12|PREEMPTED|0:15\n").values()
    assert ended.state.is_final and ended.interruption == Interruption.PREEMPTED
    (suspended,) = parse_squeue("13|13|N/A|SUSPENDED|None|0|N/A|\n").values()
    assert (suspended.state, suspended.interruption) == (JobState.HELD, Interruption.SUSPENDED)


def test_sge_suspended_and_rescheduled_jobs():
    (code,) = parse_qstat_xml((RECORDED / "sge_qstat_xml_suspended.xml").read_text()).values()
    suspended = sge_state(code)
    assert (code, suspended.state, suspended.interruption) == (
        "s",
        JobState.HELD,
        Interruption.SUSPENDED,
    )
    (code,) = parse_qstat_xml((RECORDED / "sge_qstat_xml_rescheduled.xml").read_text()).values()
    rescheduled = sge_state(code)
    assert (code, rescheduled.state, rescheduled.interruption) == (
        "Rq",
        JobState.QUEUED,
        Interruption.REQUEUED,
    )
    for other in ("S", "T", "St"):
        assert sge_state(other).interruption == Interruption.SUSPENDED
    # running again after the reschedule: not a new interruption
    assert sge_state("Rr").interruption is None and sge_state("Rr").state == JobState.RUNNING


def test_pbs_suspended_then_rerun_job():
    (suspended,) = parse_qstat_json(
        (RECORDED / "pbs_qstat_f_json_suspended.json").read_text()
    ).values()
    assert (suspended.state, suspended.interruption) == (JobState.HELD, Interruption.SUSPENDED)
    assert suspended.reason == "Job suspended" and suspended.starts == 1
    (rerun,) = parse_qstat_json((RECORDED / "pbs_qstat_f_json_rerun.json").read_text()).values()
    # qrerun: running again at once, only run_count tells
    assert (rerun.state, rerun.interruption, rerun.starts) == (JobState.RUNNING, None, 2)


@pytest.mark.parametrize("stat", ["PSUSP", "USUSP", "SSUSP"])
def test_lsf_suspended_states(stat):
    status = lsf_status(stat, pend_reason="")
    assert (status.state, status.interruption) == (JobState.HELD, Interruption.SUSPENDED)


def test_lsf_job_killed_by_preemption_is_cancelled_and_preempted():
    status = lsf_status("EXIT", "130", "TERM_PREEMPT: job killed after preemption")
    assert (status.state, status.interruption) == (JobState.CANCELLED, Interruption.PREEMPTED)
    assert lsf_status("EXIT", "130", "TERM_OWNER: job killed by owner").interruption is None


def test_htcondor_evicted_job_idle_again_and_suspended_job():
    evicted = condor_status({"JobStatus": 1, "NumJobStarts": 1, "LastVacateTime": 1796658640})
    assert (evicted.state, evicted.interruption) == (JobState.QUEUED, Interruption.REQUEUED)
    assert evicted.interrupted_at == "2026-12-07T15:50:40Z" and evicted.starts == 1
    never_ran = condor_status({"JobStatus": 1, "NumJobStarts": 0})
    assert never_ran.interruption is None and never_ran.state == JobState.QUEUED
    suspended = condor_status({"JobStatus": 7, "NumJobStarts": 1})
    assert (suspended.state, suspended.interruption) == (JobState.HELD, Interruption.SUSPENDED)


# ---------------------------------------------------------------- tracker and policy


def tracked(connected: int = 1) -> tuple[JobTracker, FailurePolicy]:
    tracker = JobTracker()
    tracker.add("job-0", "7", 1, now=0.0)
    tracker.observe({"7": RUNNING}, ["7"], now=1.0)
    tracker.set_connected({"job-0": connected}, now=2.0)
    return tracker, FailurePolicy(max_failures=2)


def observe(tracker: JobTracker, status: JobStatus, now: float):
    tracker.observe({"7": status}, ["7"], now=now)
    return tracker.take_interrupted()


def test_preemption_is_seen_once_and_retires_the_workers():
    tracker, policy = tracked()
    preempted = JobStatus(
        JobState.RUNNING,
        None,
        None,
        "RUNNING",
        interruption=Interruption.PREEMPTED,
        interrupted_at="2026-12-07T15:52:29",
    )
    ((record, status),) = observe(tracker, preempted, now=10.0)
    assert record.interruption == Interruption.PREEMPTED and record.interrupted_at == 10.0
    assert record.state == JobState.CONNECTED
    assert policy.job_interrupted(record, status) == InterruptionDecision(retire=True)
    assert observe(tracker, preempted, now=11.0) == []  # the same preemption, not again
    assert "preempted at 2026-12-07T15:52:29" in repr(JobTable(tracker.live))


def test_requeued_and_held_job_is_replaced_a_queued_one_kept():
    tracker, policy = tracked(connected=0)
    held = JobStatus(JobState.HELD, "BeginTime", None, "PENDING")
    ((record, status),) = observe(tracker, held, now=30.0)
    assert (record.interruption, record.requeues) == (Interruption.REQUEUED, 1)
    assert policy.job_interrupted(record, status) == InterruptionDecision(replace=True)

    tracker, policy = tracked(connected=1)
    queued = JobStatus(JobState.QUEUED, "Priority", None, "Q")
    ((record, status),) = observe(tracker, queued, now=30.0)
    # workers still counted are the killed run's: retired so the data is looked for elsewhere
    assert policy.job_interrupted(record, status) == InterruptionDecision(
        retire=True, keep_requeued=True
    )
    assert observe(tracker, queued, now=31.0) == []


def test_a_growing_start_count_is_a_requeue_even_when_never_seen_waiting():
    tracker, policy = tracked()
    assert observe(tracker, JobStatus(JobState.RUNNING, None, None, "R", starts=1), 5.0) == []
    ((record, status),) = observe(
        tracker, JobStatus(JobState.RUNNING, None, None, "R", starts=2), 6.0
    )
    assert (record.interruption, record.requeues) == (Interruption.REQUEUED, 1)
    # running again: its connected workers may be the new run's, never retired
    assert policy.job_interrupted(record, status) == InterruptionDecision(keep_requeued=True)
    ((record, _),) = observe(tracker, JobStatus(JobState.RUNNING, None, None, "R", starts=3), 7.0)
    assert record.requeues == 2


def test_the_first_start_seen_after_the_queue_is_no_requeue():
    """Seen queued (HTCondor ``NumJobStarts`` 0), then ended after its first run (1): that is
    one start, not a rerun (the HTCondor emulator's death-before-connect test saw a job
    "requeued" this way); 0 -> 2 between two polls is one."""
    for starts, requeues in ((1, 0), (2, 1)):
        tracker = JobTracker()
        tracker.add("job-0", "7", 1, now=0.0)
        assert observe(tracker, JobStatus(JobState.QUEUED, None, None, "1", starts=0), 1.0) == []
        tracker.observe(
            {"7": JobStatus(JobState.FAILED, None, 127, "4", starts=starts)}, ["7"], 2.0
        )
        (record,) = tracker.ended
        assert record.requeues == requeues, (starts, record)
        assert (record.interruption is None) == (requeues == 0)


def test_suspension_does_nothing_and_ends_when_the_job_resumes():
    tracker, policy = tracked()
    suspended = JobStatus(
        JobState.HELD, "suspended", None, "s", interruption=Interruption.SUSPENDED
    )
    ((record, status),) = observe(tracker, suspended, now=10.0)
    assert policy.job_interrupted(record, status) == InterruptionDecision()
    assert record.requeues == 0
    assert observe(tracker, RUNNING, now=20.0) == []
    assert record.interruption is None and record.state == JobState.CONNECTED


def test_a_final_preempted_state_held_while_workers_are_connected_still_reports_the_preemption():
    tracker, policy = tracked()
    final = JobStatus(JobState.CANCELLED, None, 0, "PREEMPTED", interruption=Interruption.PREEMPTED)
    ((record, status),) = observe(tracker, final, now=10.0)
    assert record.state == JobState.CONNECTED  # held back: its workers are connected
    assert policy.job_interrupted(record, status).retire


def test_preempted_jobs_are_never_failures_even_before_connecting():
    policy = FailurePolicy(max_failures=2, backoff=5.0)
    tracker = JobTracker()
    for k in range(5):
        record = tracker.add(f"job-{k}", str(k), 1, now=float(k))
        record.apply(RUNNING, float(k))
        status = JobStatus(
            JobState.CANCELLED, None, 0, "PREEMPTED", interruption=Interruption.PREEMPTED
        )
        record.apply(status, k + 0.5)
        decision = policy.job_ended(record, status, wanted=True, now=k + 0.5, cap=10)
        assert decision.replace and not decision.failure and decision.delay == 0.0
    assert not policy.breaker_open and policy.consecutive_failures == 0
    # a job preempted earlier that finishes (its workers retired) is no failure either
    record = tracker.add("job-9", "9", 1, now=10.0)
    record.apply(JobStatus(JobState.RUNNING, interruption=Interruption.PREEMPTED), 11.0)
    finished = JobStatus(JobState.FINISHED, None, 0, "COMPLETED")
    record.apply(finished, 40.0)
    decision = policy.job_ended(record, finished, wanted=True, now=40.0, cap=10)
    assert decision.replace and not decision.failure


# ---------------------------------------------------------------- supervisor


def test_supervisor_retires_a_preempted_jobs_workers_and_replaces_it_when_it_ends():
    async def scenario():
        cluster, engine, supervisor = make(wanted=2)
        await start_wanted(cluster, supervisor)
        record = supervisor.tracker.by_name("job-0")
        record.set_connected_workers(1, 1.0)
        status = JobStatus(
            JobState.RUNNING, interruption=Interruption.PREEMPTED, interrupted_at="T"
        )
        record.apply(status, 2.0)
        await supervisor.jobs_interrupted([(record, status)])
        await asyncio.sleep(0)  # the retirement runs in the background
        retired = list(cluster.closed_on_retire)
        wanted_while_preempted = list(cluster.worker_spec)
        record.set_connected_workers(0, 3.0)
        finished = JobStatus(JobState.FINISHED, None, 0, "COMPLETED")
        record.apply(finished, 4.0)
        await supervisor.jobs_ended([(record, finished)])
        return cluster, engine, supervisor, record, retired, wanted_while_preempted

    cluster, engine, supervisor, record, retired, wanted_before = asyncio.run(scenario())
    assert retired == ["job-0"]  # retired and told to exit: the job script ends
    assert wanted_before == ["job-0", "job-1"] and engine.cancelled == []
    assert list(cluster.worker_spec) == ["job-1", "job-2"]
    assert record.capacity == "replaced by job-2" and record.error is None
    assert supervisor.pending_error is None and supervisor.policy.consecutive_failures == 0
    assert "preempted at T; replaced by job-2" in repr(JobTable([record]))


def test_supervisor_replaces_a_held_requeued_job_and_keeps_a_queued_one():
    async def scenario():
        cluster, engine, supervisor = make(wanted=2)
        await start_wanted(cluster, supervisor)
        held_record = supervisor.tracker.by_name("job-0")
        queued_record = supervisor.tracker.by_name("job-1")
        for record in (held_record, queued_record):
            record.apply(RUNNING, 1.0)
        held = JobStatus(JobState.HELD, "BeginTime", None, "PENDING")
        queued = JobStatus(JobState.QUEUED, None, None, "Q")
        held_record.apply(held, 2.0)
        queued_record.apply(queued, 2.0)
        await supervisor.jobs_interrupted([(held_record, held), (queued_record, queued)])
        return cluster, engine, supervisor, held_record, queued_record

    cluster, engine, supervisor, held_record, queued_record = asyncio.run(scenario())
    assert engine.cancelled == [held_record.job_id]
    assert list(cluster.worker_spec) == ["job-1", "job-2"] and "job-0" not in cluster.workers
    assert held_record.capacity == "replaced by job-2" and held_record.state == JobState.CANCELLED
    assert queued_record.capacity == "requeued" and "job-1" in cluster.workers
    assert supervisor.tracker.by_name("job-1") is queued_record
    assert supervisor.pending_error is None
    assert "requeued; replaced by job-2" in repr(JobTable([held_record]))


def test_a_retirement_that_hangs_does_not_hold_the_poller_and_is_cancelled_at_close():
    async def scenario():
        cluster, engine, supervisor = make(wanted=1)
        await start_wanted(cluster, supervisor)
        started = asyncio.Event()
        cancelled = []

        async def hangs(names, close=False):
            started.set()
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                cancelled.append(names)
                raise

        cluster.retire_job_workers = hangs  # type: ignore[method-assign]
        record = supervisor.tracker.by_name("job-0")
        record.set_connected_workers(1, 1.0)
        status = JobStatus(JobState.RUNNING, interruption=Interruption.PREEMPTED)
        record.apply(status, 2.0)
        await asyncio.wait_for(supervisor.jobs_interrupted([(record, status)]), 5)
        await asyncio.wait_for(started.wait(), 5)
        before_close = list(cancelled)
        await supervisor.stop_submitting()
        for _ in range(3):
            await asyncio.sleep(0)
        return before_close, cancelled

    before_close, cancelled = asyncio.run(scenario())
    assert before_close == [] and cancelled == [["job-0"]]


def test_a_retirement_that_fails_is_logged_not_raised(caplog):
    async def scenario():
        cluster, engine, supervisor = make(wanted=1)
        await start_wanted(cluster, supervisor)

        async def fails(names, close=False):
            raise RuntimeError("scheduler gone")

        cluster.retire_job_workers = fails  # type: ignore[method-assign]
        record = supervisor.tracker.by_name("job-0")
        record.set_connected_workers(1, 1.0)
        status = JobStatus(JobState.RUNNING, interruption=Interruption.PREEMPTED)
        record.apply(status, 2.0)
        await supervisor.jobs_interrupted([(record, status)])
        for _ in range(3):
            await asyncio.sleep(0)
        return cluster, engine, supervisor

    with caplog.at_level("WARNING", logger="dask_jobqueue.supervisor"):
        cluster, engine, supervisor = asyncio.run(scenario())
    assert "Retiring the workers of a preempted job failed" in caplog.text
    assert "scheduler gone" in caplog.text
    assert supervisor.pending_error is None and engine.cancelled == []
    assert list(cluster.worker_spec) == ["job-0"]


def test_nothing_is_replaced_for_an_interrupted_job_while_the_cluster_closes():
    async def scenario():
        cluster, engine, supervisor = make(wanted=1)
        await start_wanted(cluster, supervisor)
        record = supervisor.tracker.by_name("job-0")
        record.apply(RUNNING, 1.0)
        held = JobStatus(JobState.HELD, "BeginTime", None, "PENDING")
        record.apply(held, 2.0)
        cluster.closing = True
        await supervisor.jobs_interrupted([(record, held)])
        return cluster, engine, record

    cluster, engine, record = asyncio.run(scenario())
    assert engine.cancelled == [] and list(cluster.worker_spec) == ["job-0"]
    assert record.capacity is None


# ---------------------------------------------------------------- the manual


def test_the_preemption_page_names_real_settings_and_defaults():
    import dask.config
    import yaml

    text = (Path(__file__).parents[1] / "docs" / "preemption.rst").read_text()
    block = text.split(".. code-block:: yaml", 1)[1].split("\n\n", 2)[1]
    settings = yaml.safe_load(block)["jobqueue"]["slurm"]
    defaults = dask.config.get("jobqueue.slurm")
    assert set(settings) <= set(defaults), set(settings) - set(defaults)
    assert defaults["poll-interval-max"] == "30s" and "(``30s`` by default)" in text
    assert '"jobqueue.slurm.poll-interval-max": "5s"' in text
    index = (Path(__file__).parents[1] / "docs" / "index.rst").read_text()
    assert "\n   preemption\n" in index


def test_a_suspended_job_stays_suspended_while_its_frozen_workers_are_registered():
    tracker, _ = tracked()
    suspended = JobStatus(
        JobState.HELD, "suspended", None, "s", interruption=Interruption.SUSPENDED
    )
    observe(tracker, suspended, now=10.0)
    changed, _ = tracker.set_connected({"job-0": 1}, now=11.0)
    (record,) = tracker.live
    assert not changed and record.state == JobState.HELD
    assert repr(JobTable([record])).splitlines()[1].split()[3] == "suspended"
    observe(tracker, RUNNING, now=20.0)
    assert record.state == JobState.CONNECTED and record.interruption is None


def test_oar_suspended_job_is_suspended_not_requeued():
    from dask_jobqueue.dialects.oar import oar_job_status

    status = oar_job_status({"state": "Suspended"})
    assert (status.state, status.interruption) == (JobState.HELD, Interruption.SUSPENDED)
    tracker, policy = tracked()
    ((record, status),) = observe(tracker, status, now=10.0)
    assert record.interruption == Interruption.SUSPENDED and record.requeues == 0
    assert policy.job_interrupted(record, status) == InterruptionDecision()
