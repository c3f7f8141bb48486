"""What to do when a job ends: replace it, when, and when to stop trying (the breaker).

Pure: every decision takes ``now``; nothing here runs a command or sleeps.

* A job that ends *after* its workers connected (walltime, finished, cancelled from outside)
  is replaced at once and is not a failure.
* A job that ends *before* any worker connected is a failure: it is replaced after a backoff
  that doubles with each consecutive failure, and after ``max_failures`` in a row the breaker
  opens: no more submissions until the user calls ``scale()``/``adapt()`` again. Deaths of
  replacements count like any other.
* Whatever the reasons, replacements are capped per minute: beyond the cap they wait for the
  window to move (a runaway can never submit faster than the cap).
* A failed or lost job, and one stuck in an error state, is cancelled before it is replaced.
* A preempted or requeued job is never a failure, whenever it ends: it is replaced at once.

Interruptions of a job that has not ended (:meth:`FailurePolicy.job_interrupted`):

* preempted (still running, in its grace period): its workers retire now, their data moving
  to other workers before the batch system kills them;
* requeued (waiting again after it ran): if it waits in a *held* state it cannot start by
  itself soon (Slurm holds a requeued job until ``BeginTime``, ~2 minutes), so it is cancelled
  and replaced by a fresh job that can start as soon as the resources are free; queued, it
  keeps its place and is kept (the capacity comes back as the same job);
* suspended: nothing to do; its workers are frozen with their data and go on when it resumes.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass

from .tracking import Interruption, JobRecord, JobState, JobStatus

__all__ = ["Decision", "FailurePolicy", "InterruptionDecision"]

_CANCEL_STATES = frozenset({JobState.FAILED, JobState.LOST})


@dataclass(frozen=True)
class Decision:
    """The policy's answer for one ended job."""

    replace: bool
    delay: float = 0.0
    cancel: bool = False
    failure: bool = False
    breaker_opened: bool = False


@dataclass(frozen=True)
class InterruptionDecision:
    """The policy's answer for a job seen preempted, requeued or suspended."""

    #: Retire the job's connected workers now (their data moves to other workers).
    retire: bool = False
    #: Cancel the job and submit a replacement under a new name.
    replace: bool = False
    #: Keep the job: it runs again by itself (recorded as "requeued" in the job table).
    keep_requeued: bool = False


class FailurePolicy:
    """Replacement, backoff, breaker and resubmission cap for one cluster.

    Parameters
    ----------
    max_failures : int
        Consecutive deaths before connecting that open the breaker.
    backoff : float
        Delay before the first resubmission after a failure, in seconds; doubles per failure.
    max_backoff : float
        Upper bound of that delay.
    window : float
        Length of the resubmission-cap window, in seconds.
    """

    def __init__(
        self,
        max_failures: int = 3,
        backoff: float = 2.0,
        max_backoff: float = 60.0,
        window: float = 60.0,
    ):
        self.max_failures = max_failures
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.window = window
        self.consecutive_failures = 0
        self.breaker_open = False
        #: When each replacement was (or will be) due, sorted: each decision is O(log n)
        #: (amortised), also when thousands of jobs end in one poll.
        self._resubmissions: list[float] = []

    def connected(self) -> None:
        """A job's workers connected: the configuration works, failures start over."""
        self.consecutive_failures = 0

    def submit_failed(self) -> None:
        """A submit command failed: a configuration problem until proven otherwise."""
        self.breaker_open = True

    def rearm(self) -> None:
        """The user asked again (``scale``/``adapt``): try again from a clean slate."""
        self.breaker_open = False
        self.consecutive_failures = 0

    def job_ended(
        self, record: JobRecord, status: JobStatus, wanted: bool, now: float, cap: int
    ) -> Decision:
        """Decide about a job that reached a final state on its own.

        ``wanted``: the cluster still wants this job (it was not scaled away); ``cap``: the
        most replacements allowed per window (usually a few times the number of jobs).
        """
        cancel = status.stuck or record.state in _CANCEL_STATES
        if not wanted:
            return Decision(replace=False, cancel=cancel)
        interrupted = status.interruption is not None or record.interruption in (
            Interruption.PREEMPTED,
            Interruption.REQUEUED,
        )
        failure = not record.ever_connected and not interrupted
        delay = 0.0
        opened = False
        if failure:
            self.consecutive_failures += 1
            if self.consecutive_failures >= self.max_failures:
                opened = not self.breaker_open
                self.breaker_open = True
                return Decision(replace=False, cancel=cancel, failure=True, breaker_opened=opened)
            delay = min(self.backoff * 2 ** (self.consecutive_failures - 1), self.max_backoff)
        at = self._earliest_slot(now, now + delay, cap)
        bisect.insort(self._resubmissions, at)
        return Decision(replace=True, delay=at - now, cancel=cancel, failure=failure)

    def job_interrupted(self, record: JobRecord, status: JobStatus) -> InterruptionDecision:
        """Decide about a live job just seen preempted, requeued or suspended
        (``record.interruption``; ``status``: the poll that showed it)."""
        event = record.interruption
        if event == Interruption.PREEMPTED:
            return InterruptionDecision(retire=record.workers_connected > 0)
        if event == Interruption.REQUEUED:
            # held: it cannot start by itself (Slurm's BeginTime after a requeue); a fresh
            # job can, as soon as the resources are free
            held = status.state == JobState.HELD
            # workers still counted while it waits are the killed run's; a job seen running
            # again (a rerun) may already have new ones
            leftovers = status.state.is_waiting and record.workers_connected > 0
            return InterruptionDecision(retire=leftovers, replace=held, keep_requeued=not held)
        return InterruptionDecision()

    def _earliest_slot(self, now: float, at: float, cap: int) -> float:
        """The first time from ``at`` on at which a replacement keeps every window of
        ``window`` seconds at no more than ``cap`` replacements."""
        del self._resubmissions[: bisect.bisect_right(self._resubmissions, now - self.window)]
        cap = max(1, cap)
        times = self._resubmissions
        if len(times) < cap:
            return at
        return max(at, times[-cap] + self.window)
