"""The job tracker and the failure policy: pure, explicit clocks, no commands, no sleeps."""

from __future__ import annotations

import pytest

from dask_jobqueue.policy import FailurePolicy
from dask_jobqueue.tracker import JobTracker, Vanish
from dask_jobqueue.tracking import JobRecord, JobState, JobStatus

QUEUED = JobStatus(JobState.QUEUED, "Priority", None, "PENDING")
RUNNING = JobStatus(JobState.RUNNING, None, None, "RUNNING")
FAILED = JobStatus(JobState.FAILED, None, 1, "FAILED")
TIMEOUT = JobStatus(JobState.TIMED_OUT, None, None, "TIMEOUT")


def tracker_with(*names, vanish=None):
    tracker = JobTracker(vanish or Vanish(polls=3, seconds=30))
    for i, name in enumerate(names):
        tracker.add(name, str(100 + i), workers_expected=1, now=0.0)
    return tracker


# ---------------------------------------------------------------------------- tracker


def miss_100(tracker, now):
    """A poll whose listing works (job 101 is listed, waiting) but leaves out job 100."""
    return tracker.observe({"101": QUEUED}, ["100", "101"], now=now)


def test_vanished_job_keeps_its_state_during_the_grace_then_is_lost():
    tracker = tracker_with("a", "b")
    tracker.observe({"100": RUNNING, "101": QUEUED}, ["100", "101"], now=1.0)
    # missing from 3 polls within 30 s: not yet ended (controller restart, late accounting)
    for now in (2.0, 4.0, 6.0):
        changed, ended = miss_100(tracker, now)
        assert ended == []
        assert tracker.get("100").state == JobState.RUNNING
    assert "not listed" in tracker.get("100").reason
    # 30 s after it was first missed (and 3+ polls): lost
    changed, ended = miss_100(tracker, 33.0)
    assert [(r.job_id, r.state) for r, _ in ended] == [("100", JobState.LOST)]
    assert "100" not in tracker


def test_vanish_needs_both_polls_and_seconds():
    tracker = tracker_with("a", "b")
    tracker.observe({"100": RUNNING, "101": QUEUED}, ["100", "101"], now=0.0)
    miss_100(tracker, 1.0)
    # long enough, but only the second poll without it
    _, ended = miss_100(tracker, 100.0)
    assert ended == []
    _, ended = miss_100(tracker, 101.0)
    assert len(ended) == 1


def test_reappearing_job_resets_the_grace():
    tracker = tracker_with("a", "b")
    miss_100(tracker, 0.0)
    miss_100(tracker, 20.0)
    tracker.observe({"100": RUNNING, "101": QUEUED}, ["100", "101"], now=25.0)  # listed again
    miss_100(tracker, 40.0)
    miss_100(tracker, 45.0)
    _, ended = miss_100(tracker, 50.0)
    assert ended == []  # first missed again at 40 s: 10 s ago
    _, ended = miss_100(tracker, 71.0)
    assert len(ended) == 1


def test_vanished_while_waiting_is_cancelled_not_lost():
    tracker = tracker_with("a", "b")
    tracker.observe({"100": QUEUED, "101": QUEUED}, ["100", "101"], now=0.0)
    for now in (10.0, 20.0, 40.0):
        _, ended = miss_100(tracker, now)
    assert [(r.state, r.ever_connected) for r, _ in ended] == [(JobState.CANCELLED, False)]


def test_dialect_vanish_state_is_used():
    vanish = Vanish(polls=1, seconds=0, state=JobState.FINISHED, reason="purged")
    tracker = tracker_with("a", "b", vanish=vanish)
    tracker.observe({"100": RUNNING, "101": QUEUED}, ["100", "101"], now=0.0)
    _, ended = miss_100(tracker, 1.0)
    record, status = ended[0]
    assert (record.state, record.reason) == (JobState.FINISHED, "purged")


def test_never_ended_while_workers_are_connected():
    tracker = tracker_with("a")
    tracker.set_connected({"a": 1}, now=1.0)
    assert tracker.get("100").state == JobState.CONNECTED
    # the batch system forgot the job (server restart): far beyond the grace, still alive
    for now in (10.0, 20.0, 40.0, 80.0):
        _, ended = tracker.observe({}, ["100"], now=now, denied=["100"])
        assert ended == []
    # it even says the job failed: the workers say otherwise
    _, ended = tracker.observe({"100": FAILED}, ["100"], now=90.0)
    assert ended == [] and tracker.get("100").state == JobState.CONNECTED
    assert "workers are still connected" in tracker.get("100").reason
    # once they leave, the held-back final state applies
    tracker.set_connected({}, now=95.0)
    ended = tracker.take_disconnected_finals(now=95.0)
    assert [(r.job_id, r.state, r.exit_code) for r, _ in ended] == [("100", JobState.FAILED, 1)]


def test_connections_are_counted_per_job_name():
    tracker = tracker_with("a", "b")
    changed, first = tracker.set_connected({"b": 2, "zzz": 5}, now=1.0)
    assert changed and [r.name for r in first] == ["b"]
    assert tracker.get("100").workers_connected == 0
    assert tracker.get("101").workers_connected == 2
    _, first = tracker.set_connected({"b": 2}, now=2.0)
    assert first == []  # only the first connection counts as "connected"


def test_duplicate_job_id_is_refused():
    tracker = tracker_with("a")
    with pytest.raises(ValueError, match="already tracked"):
        tracker.add("b", "100", 1, now=1.0)


def test_forget_moves_to_ended_with_the_given_state():
    tracker = tracker_with("a")
    tracker.forget("100", JobState.CANCELLED, "cancelled by the cluster", now=5.0)
    assert tracker.live_ids() == []
    assert [(r.state, r.reason) for r in tracker.ended] == [
        (JobState.CANCELLED, "cancelled by the cluster")
    ]
    # a late poll about it changes nothing
    assert tracker.observe({"100": FAILED}, ["100"], now=6.0) == (False, [])


# ---------------------------------------------------------------------------- listing outages

FINISHED = JobStatus(JobState.FINISHED, None, 0, "COMPLETED")


def test_a_listing_showing_none_of_the_jobs_is_an_outage_not_their_end():
    """Six queued jobs; the listing shows none of them for an hour: nothing ends, nothing is
    marked for cancelling, the breaker stays shut, and the jobs are back when listed again."""
    names = [f"j{i}" for i in range(6)]
    tracker = tracker_with(*names)
    ids = tracker.live_ids()
    policy = FailurePolicy(max_failures=3)
    tracker.observe(dict.fromkeys(ids, QUEUED), ids, now=0.0)
    assert tracker.unlisted_since is None
    ended_total = []
    for now in range(10, 3600, 10):
        _, ended = tracker.observe({}, ids, now=float(now))
        ended_total += ended
    assert ended_total == []
    assert tracker.unlisted_since == 10.0
    assert [r.state for r in tracker.live] == [JobState.QUEUED] * 6
    assert all("status unknown" in r.reason for r in tracker.live)
    assert not policy.breaker_open and policy.consecutive_failures == 0
    # listed again: the outage is over, states as listed
    tracker.observe(dict.fromkeys(ids, QUEUED), ids, now=3600.0)
    assert tracker.unlisted_since is None
    assert all(r.reason == "Priority" for r in tracker.live)


def test_during_an_outage_accounting_can_still_end_a_job():
    """A final state from a second source (accounting) ends its job; the others stay."""
    tracker = tracker_with("a", "b")
    tracker.observe({"100": RUNNING, "101": QUEUED}, ["100", "101"], now=0.0)
    for now in (10.0, 20.0, 40.0, 80.0):
        _, ended = tracker.observe({"100": FINISHED}, ["100", "101"], now=now)
        if now == 10.0:
            assert [(r.job_id, r.state) for r, _ in ended] == [("100", JobState.FINISHED)]
        else:
            assert ended == []
    assert tracker.live_ids() == ["101"]
    assert tracker.get("101").state == JobState.QUEUED
    assert tracker.unlisted_since == 10.0


def test_jobs_the_batch_system_denies_knowing_still_vanish():
    """``Invalid job id``: an explicit answer, not a silent listing; the grace applies."""
    tracker = tracker_with("a", "b")
    tracker.observe({"100": QUEUED, "101": QUEUED}, ["100", "101"], now=0.0)
    ended = []
    for now in (10.0, 20.0, 40.0):
        _, ended = tracker.observe({}, ["100", "101"], now=now, denied=["100", "101"])
    assert sorted((r.job_id, r.state, s.stuck) for r, s in ended) == [
        ("100", JobState.CANCELLED, True),
        ("101", JobState.CANCELLED, True),
    ]
    assert tracker.unlisted_since is None


def test_the_grace_does_not_advance_during_an_outage():
    """Missed twice by a working listing, then an outage of 10 minutes: the job is still
    there after it, and needs one more miss by a working listing to end."""
    tracker = tracker_with("a", "b")
    tracker.observe({"100": RUNNING, "101": QUEUED}, ["100", "101"], now=0.0)
    miss_100(tracker, 1.0)
    miss_100(tracker, 2.0)
    for now in range(10, 600, 10):
        _, ended = tracker.observe({}, ["100", "101"], now=float(now))
        assert ended == []
    _, ended = tracker.observe({"101": QUEUED}, ["100", "101"], now=600.0)
    assert [(r.job_id, r.state) for r, _ in ended] == [("100", JobState.LOST)]


def test_an_outage_ends_when_a_new_job_is_listed():
    tracker = tracker_with("a")
    tracker.observe({}, ["100"], now=1.0)
    assert tracker.unlisted_since == 1.0
    tracker.add("b", "101", 1, now=2.0)
    tracker.observe({"101": QUEUED}, ["100", "101"], now=3.0)
    assert tracker.unlisted_since is None


@pytest.mark.parametrize(
    ("statuses", "denied", "outage"),
    [
        ({}, (), True),  # nothing listed
        ({"100": FINISHED}, (), True),  # a final state may come from accounting
        ({"100": QUEUED}, (), False),  # one seen alive: the listing works
        ({}, ("100", "101"), False),  # both denied: an answer
        ({}, ("100",), True),  # one denied, one silently left out
        ({"100": FINISHED, "101": FINISHED}, (), False),  # nothing missing
    ],
)
def test_listing_outage_rule(statuses, denied, outage):
    assert JobTracker.listing_outage(statuses, ["100", "101"], denied) is outage


# ---------------------------------------------------------------------------- policy


def record(connected: bool, state=JobState.FAILED) -> JobRecord:
    r = JobRecord(name="a", job_id="1", state=state)
    r.ever_connected = connected
    return r


def test_death_after_connect_is_replaced_at_once_and_is_no_failure():
    policy = FailurePolicy(max_failures=3, backoff=2)
    decision = policy.job_ended(record(True, JobState.TIMED_OUT), TIMEOUT, True, now=0, cap=10)
    assert decision.replace and decision.delay == 0 and not decision.failure
    assert policy.consecutive_failures == 0 and not policy.breaker_open


def test_deaths_before_connect_back_off_then_open_the_breaker():
    policy = FailurePolicy(max_failures=3, backoff=2)
    first = policy.job_ended(record(False), FAILED, True, now=0, cap=10)
    second = policy.job_ended(record(False), FAILED, True, now=10, cap=10)
    third = policy.job_ended(record(False), FAILED, True, now=20, cap=10)
    assert (first.replace, first.delay, first.failure) == (True, 2, True)
    assert (second.replace, second.delay) == (True, 4)
    assert (third.replace, third.breaker_opened) == (False, True)
    assert policy.breaker_open
    # a fourth death (a replacement already in flight) does not reopen it
    assert not policy.job_ended(record(False), FAILED, True, now=30, cap=10).breaker_opened
    policy.rearm()
    assert not policy.breaker_open and policy.consecutive_failures == 0


def test_a_connection_resets_the_failure_count():
    policy = FailurePolicy(max_failures=2, backoff=1)
    policy.job_ended(record(False), FAILED, True, now=0, cap=10)
    policy.connected()
    decision = policy.job_ended(record(False), FAILED, True, now=1, cap=10)
    assert decision.replace and not decision.breaker_opened


def test_failed_lost_and_stuck_jobs_are_cancelled_before_replacement():
    policy = FailurePolicy()
    assert policy.job_ended(record(True, JobState.FAILED), FAILED, True, 0, 10).cancel
    lost = JobStatus(JobState.LOST)
    assert policy.job_ended(record(True, JobState.LOST), lost, True, 0, 10).cancel
    stuck = JobStatus(JobState.TIMED_OUT, None, None, "Held", stuck=True)
    assert policy.job_ended(record(True, JobState.TIMED_OUT), stuck, True, 0, 10).cancel
    done = JobStatus(JobState.FINISHED, None, 0)
    assert not policy.job_ended(record(True, JobState.FINISHED), done, True, 0, 10).cancel
    # not wanted any more: never replaced, still cleaned up
    unwanted = policy.job_ended(record(True, JobState.FAILED), FAILED, False, 0, 10)
    assert not unwanted.replace and unwanted.cancel


def test_replacements_are_capped_per_window():
    policy = FailurePolicy(window=60)
    delays = [
        policy.job_ended(record(True, JobState.TIMED_OUT), TIMEOUT, True, now=0, cap=4).delay
        for _ in range(10)
    ]
    # 4 at once, the next 4 a window later, then 2 more a window after that
    assert delays == [0, 0, 0, 0, 60, 60, 60, 60, 120, 120]


def test_cap_window_slides():
    policy = FailurePolicy(window=60)
    for _ in range(3):
        policy.job_ended(record(True, JobState.TIMED_OUT), TIMEOUT, True, now=0, cap=3)
    assert (
        policy.job_ended(record(True, JobState.TIMED_OUT), TIMEOUT, True, now=61, cap=3).delay == 0
    )
