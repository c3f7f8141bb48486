"""What the parts of one engine share: its runner, budget, dialect, counters and live ids."""

from __future__ import annotations

import itertools
import os
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

from .._shell import CommandResult, CommandRunner
from ..tags import JobTag, new_cluster_id, safe_host

if TYPE_CHECKING:
    from ..job import Job


class CommandBudget:
    """A token bucket for batch-system commands: ``burst`` at once, then ``per_minute``.

    Sites that rate-limit their controller (Slurm's ``rl_*`` settings, say) reject calls
    beyond such a bucket; here a command that would exceed it waits its turn instead. Waits
    are reserved in call order (:meth:`reserve`), from threads and the event loop alike.
    """

    def __init__(
        self, per_minute: float, burst: int = 10, clock: Callable[[], float] = time.monotonic
    ):
        if not per_minute > 0:
            raise ValueError(f"command_rate_limit={per_minute!r} must be a positive number")
        if burst < 1:
            raise ValueError(f"command_burst={burst!r} must be a positive integer")
        self.rate = per_minute / 60.0
        self.burst = burst
        self.clock = clock
        self._tokens = float(burst)
        self._stamp = clock()
        self._lock = threading.Lock()

    def reserve(self) -> float:
        """Take one command's token; the seconds to wait before running it."""
        with self._lock:
            now = self.clock()
            self._tokens = min(self.burst, self._tokens + (now - self._stamp) * self.rate)
            self._stamp = now
            self._tokens -= 1
            return 0.0 if self._tokens >= 0 else -self._tokens / self.rate


class DuplicateJobIdError(RuntimeError):
    """The submit command reported a job id this cluster already tracks: the output was
    misread (a banner line?) or the batch system reuses ids; nothing is tracked twice."""


class EngineContext:
    """The state every operation of one engine (submit, arrays, query, cancel) shares.

    Parameters
    ----------
    template : Job
        A job of the cluster; its class is the dialect.
    runner : CommandRunner
        Runs every command and every pause between tries.
    budget : CommandBudget, optional
        Shared by every command (``None``: no limit).
    status_timeout : float
        Seconds before a command that only asks (status, tag listing, site limits) is killed.
    """

    def __init__(
        self,
        template: Job,
        runner: CommandRunner,
        budget: CommandBudget | None,
        status_timeout: float,
    ):
        self.template = template
        self.dialect = type(template)
        self.runner = runner
        self.budget = budget
        self.status_timeout = status_timeout
        #: What the engine learned about this site (e.g. ``{"pbs_flavour": "torque"}``).
        self.facts: dict[str, Any] = {}
        #: Commands run so far, by kind: ``submit``, ``status``, ``cancel``, ``limits``.
        self.commands: Counter[str] = Counter()
        self.lock = threading.Lock()
        self.live: set[str] = set()
        self.submitted_at: dict[str, float] = {}  # live id -> wall-clock submission time
        self.closing = False
        #: Called from any thread after the set of live ids changed, with the ids added and
        #: the ids removed (each call carries only the change: keep it O(change)).
        self.on_live_change: Callable[[Sequence[str], Sequence[str]], None] | None = None
        #: Id of this engine's cluster in the tags of its jobs (8 hex digits).
        self.cluster_id = new_cluster_id()
        self._serials = itertools.count()
        self._host = safe_host(socket.gethostname())

    # ------------------------------------------------------------------ commands

    def count(self, kind: str) -> None:
        """One more command of ``kind`` (from any thread)."""
        with self.lock:
            self.commands[kind] += 1

    def spend_sync(self) -> None:
        """Wait (blocking) for the command budget, if there is one."""
        wait = self.budget.reserve() if self.budget is not None else 0.0
        if wait > 0:
            self.runner.sleep_sync(wait)

    async def spend(self) -> None:
        """Wait (on the event loop) for the command budget, if there is one."""
        wait = self.budget.reserve() if self.budget is not None else 0.0
        if wait > 0:
            await self.runner.sleep(wait)

    async def run(
        self, kind: str, argv: Sequence[str], timeout: float | None, stdin: str | None = None
    ) -> CommandResult:
        """Run one command of ``kind`` on the loop: counted, paid from the budget."""
        self.count(kind)
        await self.spend()
        return await self.runner.run(argv, stdin=stdin, timeout=timeout)

    def run_sync(
        self, kind: str, argv: Sequence[str], timeout: float, stdin: str | None = None
    ) -> CommandResult:
        """Run one command of ``kind``, blocking: counted, paid from the budget."""
        self.count(kind)
        self.spend_sync()
        return self.runner.run_sync(argv, stdin=stdin, timeout=timeout)

    # ------------------------------------------------------------------ live ids

    @property
    def live_ids(self) -> set[str]:
        """Ids this engine created and has not seen end or cancelled (a copy)."""
        with self.lock:
            return set(self.live)

    def live_changed(self, added: Sequence[str] = (), removed: Sequence[str] = ()) -> None:
        if self.on_live_change is not None:
            self.on_live_change(added, removed)

    def track(self, job_ids: Sequence[str], command: str) -> bool:
        """Hold the ids ``command`` (its text, for the error) just created as live; whether
        the engine is closing (then the caller cancels them). Raises
        :class:`DuplicateJobIdError` for an id already live or reported twice."""
        with self.lock:
            taken = [i for i in job_ids if i in self.live]
            if taken or len(set(job_ids)) != len(job_ids):
                raise DuplicateJobIdError(
                    f"`{command}` reported job id(s) {', '.join(taken or job_ids)}, which this "
                    "cluster already tracks"
                )
            self.live.update(job_ids)
            self.submitted_at.update(dict.fromkeys(job_ids, time.time()))
            closing = self.closing
        self.live_changed(added=job_ids)
        return closing

    def hold(self, job_ids: Iterable[str]) -> None:
        """Hold ids this engine did not submit as live (until a cancel is confirmed)."""
        with self.lock:
            added = [i for i in dict.fromkeys(job_ids) if i not in self.live]
            self.live.update(added)
        if added:
            self.live_changed(added=added)

    def release(self, job_ids: Iterable[str]) -> None:
        """These jobs ended or were cancelled: nothing left to cancel for them."""
        with self.lock:
            removed = [i for i in dict.fromkeys(job_ids) if i in self.live]
            self.live.difference_update(removed)
            for job_id in removed:
                self.submitted_at.pop(job_id, None)
        if removed:
            self.live_changed(removed=removed)

    def new_tag(self) -> JobTag:
        """The tag of the next submission: this cluster, a fresh serial, this process."""
        with self.lock:
            serial = next(self._serials)
        return JobTag(self.cluster_id, serial, os.getpid(), self._host)


def first_line(exc: BaseException) -> str:
    """The first line of an error's message (its type's name if it has none)."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
