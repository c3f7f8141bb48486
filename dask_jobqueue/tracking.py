"""One state model for the jobs of every batch system, and the table users see.

Each scheduler dialect translates its own status output into :class:`JobStatus` values; the
cluster keeps one :class:`JobRecord` per submitted job and exposes them as ``cluster.jobs``.
"""

from __future__ import annotations

import enum
import html
import time
from collections.abc import Iterable
from dataclasses import dataclass, field


class JobState(str, enum.Enum):
    """Where a batch job is in its life, the same words for every scheduler."""

    QUEUED = "queued"
    HELD = "held"
    RUNNING = "running"
    CONNECTED = "connected"  # running, and at least one of its Dask workers has connected
    FINISHED = "finished"
    FAILED = "failed"
    CANCELLED = "cancelled"
    TIMED_OUT = "timed-out"
    LOST = "lost"  # vanished from the batch system without a final state

    @property
    def is_final(self) -> bool:
        return self in _FINAL_STATES

    @property
    def is_waiting(self) -> bool:
        return self in (JobState.QUEUED, JobState.HELD)

    def __str__(self) -> str:
        return self.value


class Interruption(str, enum.Enum):
    """Why a job stopped running its workers without ending: the same words for every
    scheduler."""

    #: chosen for preemption: still running, its workers retiring during the grace period
    PREEMPTED = "preempted"
    #: stopped in place (SIGSTOP): its workers freeze and come back if it resumes
    SUSPENDED = "suspended"
    #: back in the queue after it ran (Slurm requeue, SGE reschedule, HTCondor eviction...)
    REQUEUED = "requeued"

    def __str__(self) -> str:
        return self.value


_FINAL_STATES = frozenset(
    {JobState.FINISHED, JobState.FAILED, JobState.CANCELLED, JobState.TIMED_OUT, JobState.LOST}
)


@dataclass(frozen=True)
class JobStatus:
    """What one status query said about one job."""

    state: JobState
    reason: str | None = None
    exit_code: int | None = None
    native_state: str | None = None  # the scheduler's own word, e.g. "PENDING", "qw", "PEND"
    #: Cancel the job once the cluster lets go of it: it will never leave this state by itself
    #: (SGE ``Eqw``, an HTCondor hold by a time policy), or its end was only inferred (it
    #: vanished from the status commands) and it might still be queued or running.
    stuck: bool = False
    #: The job is being preempted, is suspended or was requeued (see :class:`Interruption`).
    interruption: Interruption | None = None
    #: The batch system's word on when (Slurm's ``PreemptTime``), as it printed it.
    interrupted_at: str | None = None
    #: How many times the batch system has started the job (PBS ``run_count``, HTCondor
    #: ``NumJobStarts``), where it says: a count that grows means it was requeued and rerun.
    starts: int | None = None


@dataclass
class JobRecord:
    """Everything the cluster knows about one batch job it submitted."""

    name: str
    job_id: str
    state: JobState = JobState.QUEUED
    reason: str | None = "submitted"
    native_state: str | None = None
    exit_code: int | None = None
    submitted_at: float = field(default_factory=time.time)
    started_at: float | None = None
    ended_at: float | None = None
    workers_expected: int = 1
    workers_connected: int = 0
    ever_connected: bool = False
    error: str | None = None  # explanation for a job that ended badly (with its stderr tail)
    pool: str | None = None  # the pool the job belongs to (None: the cluster's own jobs)
    #: The last preemption, suspension or requeue seen (None: never interrupted).
    interruption: Interruption | None = None
    #: When it was first seen (this process's clock), and the batch system's own time text.
    interrupted_at: float | None = None
    interrupted_when: str | None = None
    #: Times the job went back to the queue after it had run.
    requeues: int = 0
    #: The batch system's last start count of the job (see :attr:`JobStatus.starts`).
    starts: int | None = None
    #: How the capacity comes back: "requeued" (the same job) or "replaced by <name>".
    capacity: str | None = None

    def apply(self, status: JobStatus, now: float | None = None) -> bool:
        """Update from a status report; return True if the visible state changed.

        A job seen waiting again after it ran is requeued, whatever the batch system calls
        it; an interruption the status names (preempted, suspended) is recorded when first
        seen, with the batch system's time for it.
        """
        now = time.time() if now is None else now
        before = (self.state, self.reason, self.exit_code, self.interruption)
        event = status.interruption
        if (
            event is None
            and status.state.is_waiting
            and self.state in (JobState.RUNNING, JobState.CONNECTED)
        ):
            event = Interruption.REQUEUED
        # a count past 1 that grew: 0 -> 1 is the first start (seen queued, then it ran)
        rerun = (
            status.starts is not None
            and self.starts is not None
            and status.starts > max(self.starts, 1)
        )
        if status.starts is not None:
            self.starts = status.starts
        if event is None and rerun:
            event = Interruption.REQUEUED
        if event is not None and (event != self.interruption or rerun):
            self.interruption = event
            self.interrupted_at = now
            self.interrupted_when = status.interrupted_at
            if event == Interruption.REQUEUED:
                self.requeues += 1
        elif event is None and self.interruption == Interruption.SUSPENDED:
            self.interruption = None  # resumed
        state = status.state
        if state == JobState.RUNNING and self.workers_connected:
            state = JobState.CONNECTED
        if state in (JobState.RUNNING, JobState.CONNECTED) and self.started_at is None:
            self.started_at = now
        if state.is_final and self.ended_at is None:
            self.ended_at = now
        self.state = state
        self.reason = status.reason
        self.native_state = status.native_state
        if status.exit_code is not None:
            self.exit_code = status.exit_code
        return before != (self.state, self.reason, self.exit_code, self.interruption)

    @property
    def interruption_note(self) -> str | None:
        """``preempted at 2026-12-07T15:23:07; replaced by job-4``, or None."""
        if self.interruption is None:
            return None
        note = str(self.interruption)
        if self.interrupted_when:
            note += f" at {self.interrupted_when}"
        if self.capacity and self.capacity != note:
            note += f"; {self.capacity}"
        return note

    def set_connected_workers(self, count: int, now: float | None = None) -> bool:
        """Record how many of this job's workers are connected; True if the state changed."""
        self.workers_connected = count
        if self.interruption == Interruption.SUSPENDED and self.state == JobState.HELD:
            # its workers are stopped with it: still registered, not working
            if count:
                self.ever_connected = True
            return False
        if count and not self.state.is_final:
            self.ever_connected = True
            if self.state != JobState.CONNECTED:
                if self.started_at is None:
                    self.started_at = time.time() if now is None else now
                self.state = JobState.CONNECTED
                self.reason = None
                return True
        elif not count and self.state == JobState.CONNECTED:
            self.state = JobState.RUNNING
            return True
        return False

    def as_dict(self) -> dict[str, object]:
        return {
            "name": self.name,
            "job_id": self.job_id,
            "state": self.state.value,
            "reason": self.reason,
            "native_state": self.native_state,
            "exit_code": self.exit_code,
            "workers": f"{self.workers_connected}/{self.workers_expected}",
            "submitted_at": self.submitted_at,
            "started_at": self.started_at,
            "ended_at": self.ended_at,
            "error": self.error,
            "pool": self.pool,
            "interruption": None if self.interruption is None else self.interruption.value,
            "interrupted_at": self.interrupted_at,
            "requeues": self.requeues,
            "capacity": self.capacity,
        }


#: Most jobs shown one per row in the notebook (HTML) table; past that, a summary line.
HTML_ROWS = 50

_COLUMNS = ("job_id", "name", "state", "reason", "exit_code", "workers", "age")
#: With pools, the pool column comes first; the cluster's own jobs show as "default".
_POOL_COLUMNS = ("pool", *_COLUMNS)


class JobTable(list):
    """A list of :class:`JobRecord` that prints as a table (text, HTML or a DataFrame).

    ``note``: a line printed above the table, about what is not a worker job (the scheduler's
    own job of a ``scheduler_in_job`` cluster, and when its walltime ends).
    """

    def __init__(self, records: Iterable[JobRecord] = (), note: str | None = None):
        super().__init__(records)
        self.note = note

    def _rows(self, records: Iterable[JobRecord] | None = None) -> list[dict[str, str]]:
        now = time.time()
        rows = []
        for r in self if records is None else records:
            rows.append(
                {
                    "pool": r.pool or "default",
                    "job_id": r.job_id,
                    "name": r.name,
                    "state": r.state.value,
                    "reason": _reason(r),
                    "exit_code": "" if r.exit_code is None else str(r.exit_code),
                    "workers": f"{r.workers_connected}/{r.workers_expected}",
                    "age": _format_age(now - r.submitted_at),
                }
            )
        return rows

    def _columns(self) -> tuple[str, ...]:
        return _POOL_COLUMNS if any(r.pool for r in self) else _COLUMNS

    def summary(self) -> str:
        """One line such as ``3 jobs: 1 connected, 2 queued (Priority)``."""
        if not self:
            return "no jobs"
        counts: dict[str, int] = {}
        reasons: dict[str, set[str]] = {}
        for r in self:
            counts[r.state.value] = counts.get(r.state.value, 0) + 1
            if r.state.is_waiting and r.reason:
                reasons.setdefault(r.state.value, set()).add(r.reason)
        parts = []
        for state, count in counts.items():
            text = f"{count} {state}"
            if state in reasons:
                text += " (" + ", ".join(sorted(reasons[state])) + ")"
            parts.append(text)
        return f"{len(self)} job{'s' if len(self) != 1 else ''}: " + ", ".join(parts)

    def __repr__(self) -> str:
        rows = self._rows()
        note = [self.note] if self.note else []
        if not rows:
            return "\n".join([*note, "JobTable(no jobs)"])
        columns = self._columns()
        widths = {c: max(len(c), *(len(row[c]) for row in rows)) for c in columns}
        lines = ["  ".join(c.upper().ljust(widths[c]) for c in columns).rstrip()]
        for row in rows:
            lines.append("  ".join(row[c].ljust(widths[c]) for c in columns).rstrip())
        return "\n".join([*note, *lines])

    __str__ = __repr__

    def head(self, rows: int = 20) -> str:
        """The table's first ``rows`` rows as text, and how many more there are."""
        text = repr(JobTable(self[:rows]))
        if len(self) > rows:
            text += f"\n... and {len(self) - rows} more (cluster.jobs lists every job)"
        return text

    def _repr_html_(self) -> str:
        """The table as HTML; past :data:`HTML_ROWS` jobs, the summary line and the first
        rows only (50,000 rows would be megabytes in a notebook)."""
        rows = self._rows(self[:HTML_ROWS])
        columns = self._columns()
        head = "".join(f"<th style='text-align:left'>{c}</th>" for c in columns)
        body = "".join(
            "<tr>"
            + "".join(f"<td style='text-align:left'>{html.escape(row[c])}</td>" for c in columns)
            + "</tr>"
            for row in rows
        )
        if not rows:
            body = f"<tr><td colspan='{len(columns)}'>no jobs</td></tr>"
        if len(self) > HTML_ROWS:
            more = len(self) - HTML_ROWS
            body += (
                f"<tr><td colspan='{len(columns)}'>... and {more} more "
                f"(<code>cluster.jobs</code> lists every job)</td></tr>"
            )
        note = f"<p>{html.escape(self.note)}</p>" if self.note else ""
        if len(self) > HTML_ROWS:
            note += f"<p>{html.escape(self.summary())}</p>"
        return (
            f"{note}<table class='dask-jobqueue-jobs'>"
            f"<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
        )

    def to_dataframe(self):
        """Return the table as a ``pandas.DataFrame`` (pandas must be installed)."""
        import pandas as pd

        return pd.DataFrame([r.as_dict() for r in self])


def _reason(record: JobRecord) -> str:
    """The reason column: the interruption (``preempted at ...; replaced by ...``), then the
    batch system's reason unless it only repeats it (``suspended``)."""
    note = record.interruption_note
    reason = record.reason
    if note and reason and str(record.interruption) in reason.lower():
        reason = None
    return "; ".join(filter(None, (note, reason)))


def _format_age(seconds: float) -> str:
    seconds = max(0, int(seconds))
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 7200:
        return f"{seconds // 60}m"
    return f"{seconds // 3600}h{(seconds % 3600) // 60:02d}m"
