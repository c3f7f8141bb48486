"""When to replace a job ahead of its walltime, and when to retire its workers.

Pure: every decision takes ``now`` (seconds, the clock of ``JobRecord.started_at``); nothing
here runs a command, sleeps or talks to the scheduler. The cluster asks :meth:`LifetimePlanner.due`
about its running jobs about once a second and acts on the answer:

* a job's workers retire (``retire_workers``: their results move to other workers) at
  ``started + walltime - margin - offset``, where ``offset`` staggers jobs that started together
  over ``[0, stagger)`` so they do not all leave at once;
* a replacement job is submitted ``lead`` seconds before that, ``lead`` being a high percentile
  of the submit-to-connected waits this cluster observed (at least ``lead_floor``), so the
  replacement's workers are there before the old ones leave;
* a job whose run until retirement would be shorter than twice the lead is left alone: it ends
  at its walltime and is replaced then (replacing it ahead would only pile up overlapping jobs).

The default margin is ``max(60 s, 5 % of the walltime)``, at most a quarter of the walltime (a
2-minute job keeps 90 s of work instead of none) and at most 15 minutes; the default stagger is
10 % of the walltime, at most 5 minutes.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass

__all__ = ["Deadlines", "LifetimePlanner", "QueueWaits", "default_margin", "default_stagger"]

_GOLDEN = (math.sqrt(5) - 1) / 2


def default_margin(walltime: float) -> float:
    """Seconds before the walltime at which workers retire, when not configured."""
    return min(max(60.0, 0.05 * walltime), 0.25 * walltime, 900.0)


def default_stagger(walltime: float) -> float:
    """Width of the window over which jobs that started together retire, when not configured."""
    return min(0.1 * walltime, 300.0)


class QueueWaits:
    """The submit-to-connected waits of the most recent jobs, and the lead they call for.

    Parameters
    ----------
    floor : float
        The smallest lead, also used before any wait was observed.
    percentile : float
        Which percentile of the observed waits to plan for (0-100).
    factor : float
        Safety factor applied to that percentile.
    keep : int
        How many recent waits to remember.
    """

    def __init__(
        self, floor: float = 10.0, percentile: float = 90.0, factor: float = 1.25, keep: int = 20
    ):
        self.floor = floor
        self.percentile = percentile
        self.factor = factor
        self._waits: deque[float] = deque(maxlen=keep)

    def record(self, wait: float) -> None:
        """A job's first worker connected ``wait`` seconds after the job was submitted."""
        self._waits.append(max(0.0, wait))

    @property
    def observed(self) -> list[float]:
        return list(self._waits)

    def lead(self) -> float:
        """Seconds ahead of a retirement at which its replacement should be submitted."""
        if not self._waits:
            return self.floor
        ordered = sorted(self._waits)
        rank = max(0, math.ceil(self.percentile / 100 * len(ordered)) - 1)
        return max(self.floor, self.factor * ordered[rank])


@dataclass(frozen=True)
class Deadlines:
    """The moments of one job's planned end (same clock as its start)."""

    presubmit_at: float
    retire_at: float
    end_at: float


class LifetimePlanner:
    """Retirement and pre-submission times of the jobs of one cluster with a known walltime.

    Parameters
    ----------
    walltime : float
        Seconds each job may run.
    margin : float, optional
        Seconds before the walltime at which workers retire (default :func:`default_margin`).
    stagger : float, optional
        Spread of retirement times of jobs started together (default :func:`default_stagger`).
    waits : QueueWaits, optional
        Observed queue waits, giving the pre-submission lead.
    """

    def __init__(
        self,
        walltime: float,
        margin: float | None = None,
        stagger: float | None = None,
        waits: QueueWaits | None = None,
    ):
        if walltime <= 0:
            raise ValueError(f"walltime must be positive, got {walltime!r}")
        self.walltime = float(walltime)
        self.margin = default_margin(walltime) if margin is None else float(margin)
        self.stagger = default_stagger(walltime) if stagger is None else float(stagger)
        if self.margin < 0 or self.stagger < 0:
            raise ValueError("the walltime margin and stagger must not be negative")
        if self.margin + self.stagger >= self.walltime:
            raise ValueError(
                f"walltime margin ({self.margin:g}s) plus stagger ({self.stagger:g}s) leave no "
                f"run time in a walltime of {self.walltime:g}s"
            )
        self.waits = waits or QueueWaits()
        self._order: dict[str, int] = {}
        self._next = 0
        self._connected: set[str] = set()
        self._presubmitted: set[str] = set()
        self._retired: set[str] = set()

    def _offset(self, name: str) -> float:
        # Golden-ratio sequence over the order jobs were first seen: any run of consecutive
        # jobs spreads evenly over the stagger window.
        index = self._order.get(name)
        if index is None:
            index = self._order[name] = self._next
            self._next += 1
        return self.stagger * ((index * _GOLDEN) % 1.0)

    def deadlines(self, name: str, started_at: float) -> Deadlines:
        """When ``name`` (started at ``started_at``) gets its replacement and retires."""
        end = started_at + self.walltime
        retire = end - self.margin - self._offset(name)
        presubmit = max(started_at, retire - self.waits.lead())
        return Deadlines(presubmit_at=presubmit, retire_at=retire, end_at=end)

    def connected(self, name: str, submitted_at: float, now: float) -> None:
        """``name``'s first worker is connected (seen at ``now``): record its queue wait."""
        if name not in self._connected:
            self._connected.add(name)
            self.waits.record(now - submitted_at)

    def due(self, running: Iterable[tuple[str, float]], now: float) -> tuple[list[str], list[str]]:
        """The jobs, among ``(name, started_at)`` of running jobs, to replace now and to
        retire now. Each name is returned once for each action."""
        presubmit, retire = [], []
        lead = self.waits.lead()
        for name, started_at in running:
            when = self.deadlines(name, started_at)
            if when.retire_at - started_at < 2 * lead:
                # So short a run that its replacement would queue as soon as it started: jobs
                # just end at their walltime and are replaced then (no churn of overlapping jobs).
                continue
            if now >= when.presubmit_at and name not in self._presubmitted:
                self._presubmitted.add(name)
                presubmit.append(name)
            if now >= when.retire_at and name not in self._retired:
                self._retired.add(name)
                retire.append(name)
        return presubmit, retire

    def forget(self, name: str) -> None:
        """``name`` is gone: drop what was kept about it."""
        self._order.pop(name, None)
        self._connected.discard(name)
        self._presubmitted.discard(name)
        self._retired.discard(name)
