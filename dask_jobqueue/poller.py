"""The poller: one loop per cluster that asks the batch system about every live job.

It runs the engine's status commands at an adaptive interval (fast while jobs change, doubling
while nothing happens), folds in which workers are connected, lets the tracker decide what the
answers mean, and hands the jobs that ended to the cluster. A failed poll changes nothing: the
job states stay as they were. So does a poll whose listing shows none of the jobs while the
batch system does not say it forgot them (the tracker's listing outage): those jobs are kept
as unknown, never declared ended or cancelled on that evidence. An outage (polls failing or
listing none of the jobs, in a row, however long) logs one warning when it starts and one
INFO line with its duration when a poll sees the jobs again; in between it is asked again at
every poll, at the usual interval.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Mapping

from ._shell import CommandError
from .engine import BatchSystem
from .tracker import JobTracker
from .tracking import JobRecord, JobStatus

logger = logging.getLogger(__name__)

__all__ = ["JobPoller", "PollInterval"]

#: Jobs whose poll answers are applied between two yields to the event loop.
_OBSERVE_CHUNK = 5000


class PollInterval:
    """The adaptive interval between two status polls.

    Parameters
    ----------
    minimum : float
        Seconds between polls while jobs change state or were just submitted.
    maximum : float
        Upper bound, reached by doubling while nothing changes.
    """

    def __init__(self, minimum: float = 2.0, maximum: float = 30.0):
        self.minimum = minimum
        self.maximum = max(maximum, minimum)
        self.current = minimum

    def after_poll(self, changed: bool) -> float:
        """The wait before the next poll, given whether this one changed anything."""
        self.current = self.minimum if changed else min(self.current * 2, self.maximum)
        return self.current

    def reset(self) -> float:
        """A submission just happened: poll fast again."""
        self.current = self.minimum
        return self.current


class JobPoller:
    """Polls one cluster's jobs until stopped.

    Parameters
    ----------
    engine : BatchSystem
        Runs the status commands.
    tracker : JobTracker
        Interprets them.
    interval : PollInterval
        When to poll.
    connected_counts : callable
        ``connected_counts()``: connected Dask workers per job name, from the scheduler.
    on_connected : callable
        Called when a job's first worker connects.
    on_ended : callable
        ``await on_ended([(record, status), ...])`` for the jobs that ended in a poll.
    on_interrupted : callable, optional
        ``await on_interrupted([(record, status), ...])`` for the jobs a poll saw preempted,
        suspended or requeued (each event once).
    """

    def __init__(
        self,
        engine: BatchSystem,
        tracker: JobTracker,
        interval: PollInterval,
        connected_counts: Callable[[], Mapping[str, int]],
        on_connected: Callable[[], None],
        on_ended: Callable[[list[tuple[JobRecord, JobStatus]]], Awaitable[None]],
        on_interrupted: Callable[[list[tuple[JobRecord, JobStatus]]], Awaitable[None]]
        | None = None,
    ):
        self.engine = engine
        self.tracker = tracker
        self.interval = interval
        self.connected_counts = connected_counts
        self.on_connected = on_connected
        self.on_ended = on_ended
        self.on_interrupted = on_interrupted
        #: Polls that asked the batch system (each may run several status commands).
        self.polls = 0
        #: Polls whose status commands failed so far.
        self.failed_polls = 0
        #: When the current outage began (wall clock), None while polls succeed.
        self.outage_since: float | None = None
        self._outage_polls = 0
        self._task: asyncio.Task | None = None
        self._wakeup: asyncio.Event | None = None
        self._stopping = False

    def start(self) -> None:
        """Start polling on the running event loop (idempotent)."""
        if self._task is None:
            self._stopping = False
            self._wakeup = asyncio.Event()
            self._task = asyncio.ensure_future(self._run())

    async def stop(self) -> None:
        """Stop polling and wait for the loop to end."""
        if self._task is not None:
            # the flag ends the loop even if a cancellation is swallowed on the way
            self._stopping = True
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def wake(self) -> None:
        """Jobs were just submitted: poll soon, and fast."""
        if self._wakeup is not None:
            self._wakeup.set()

    def refresh_connected(self) -> bool:
        """Update connected-worker counts from the scheduler; True if a job's state changed."""
        changed, first = self.tracker.set_connected(self.connected_counts(), time.time())
        if first:
            self.on_connected()
        return changed

    async def _run(self) -> None:
        assert self._wakeup is not None
        wait = self.interval.current
        while not self._stopping:
            # not asyncio.wait_for: on Python < 3.12 it returns normally, swallowing the
            # cancellation, when the wake-up fires in the same loop iteration as stop()
            woken = asyncio.ensure_future(self._wakeup.wait())
            try:
                await asyncio.wait({woken}, timeout=wait)
            finally:
                woken.cancel()
            if self._stopping:
                return
            if woken.done() and not woken.cancelled():
                self.interval.reset()
            self._wakeup.clear()
            try:
                changed = await self.poll_once()
            except asyncio.CancelledError:
                raise
            except Exception:  # the poller must survive anything a parser or command does
                logger.exception("Job status poll failed")
                changed = False
            just_submitted = any(
                r.state.is_waiting and r.reason == "submitted" for r in self.tracker.live
            )
            wait = self.interval.after_poll(changed or just_submitted)

    async def poll_once(self) -> bool:
        """One round of status commands for every live job; True if any job changed state."""
        changed = self.refresh_connected()
        ended = self.tracker.take_disconnected_finals(time.time())
        ids = self.tracker.live_ids()
        if ids and self.engine.can_query:
            self.polls += 1
            try:
                answer = await self.engine.poll(ids)
            except CommandError as exc:
                self.failed_polls += 1
                self._outage_began(
                    "Job status query failed; job states unchanged until it works again: %s",
                    exc,
                )
            else:
                now = time.time()
                # decided over the whole poll, applied 500 jobs at a time (the loop breathes)
                outage = self.tracker.listing_outage(answer.statuses, ids, answer.denied)
                polled_changed, polled_ended = False, []
                for start in range(0, len(ids), _OBSERVE_CHUNK):
                    if start:
                        await asyncio.sleep(0)
                    chunk_changed, chunk_ended = self.tracker.observe(
                        answer.statuses,
                        ids[start : start + _OBSERVE_CHUNK],
                        now,
                        answer.denied,
                        outage=outage,
                    )
                    polled_changed |= chunk_changed
                    polled_ended += chunk_ended
                if self.tracker.unlisted_since is None:
                    self._outage_over()
                else:
                    self._outage_began(
                        "The batch system lists none of this cluster's %d job(s) and does not "
                        "say they ended (a status command printing nothing or garbage?); "
                        "keeping them as unknown, not cancelling or replacing them, until it "
                        "lists them again or accounting reports their end",
                        len(ids),
                    )
                changed |= polled_changed
                ended += polled_ended
        interrupted = self.tracker.take_interrupted()
        if interrupted and self.on_interrupted is not None:
            changed = True
            await self.on_interrupted(interrupted)
        if ended:
            changed = True
            await self.on_ended(ended)
        return changed

    def _outage_began(self, message: str, detail: object) -> None:
        """A poll failed or listed none of the jobs: warn once per outage."""
        self._outage_polls += 1
        if self.outage_since is None:
            self.outage_since = time.time()
            logger.warning(message, detail)
        else:
            logger.debug(message, detail)

    def _outage_over(self) -> None:
        if self.outage_since is not None:
            logger.info(
                "Job status queries work again after %.0fs (%d polls without an answer)",
                time.time() - self.outage_since,
                self._outage_polls,
            )
            self.outage_since = None
            self._outage_polls = 0
