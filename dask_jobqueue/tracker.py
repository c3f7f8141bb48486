"""What the cluster knows about each job it submitted, updated from polls and connections.

Pure: no commands, no clocks of its own (every call takes ``now``), no scheduler. The engine
asks the batch system; this module decides what the answers mean for each job:

* a job is identified by its batch-system id; its workers by the job's *name*, which is never
  reused, so a worker that connects is always counted for the right job;
* a job is never declared ended while one of its workers is connected, whatever the batch
  system says (a restarted controller that forgot its jobs does not kill live workers);
* a job the batch system stops listing ("vanished") keeps its last state during a grace period
  (accounting records arrive late, controllers restart), then ends as the dialect's
  ``vanished`` state (Slurm: finished, purged after ``MinJobAge``), as cancelled when it was
  last seen waiting, or as lost;
* a poll in which *none* of the polled jobs is seen alive and some are missing, without the
  batch system saying it does not know them, is a listing outage (a status command printing
  nothing or garbage with exit code 0), not their ending: the missing jobs keep their state,
  their grace does not advance and nothing is cancelled. A job ends during an outage only on a
  final state from a second source (accounting); the others are kept, as unknown, for as long
  as the outage lasts, and asked about at every poll. The outage ends at the first poll that
  sees one of the polled jobs alive (a new submission does, too), or that misses none.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from .tracking import JobRecord, JobState, JobStatus

__all__ = ["JobTracker", "Vanish"]

_UNLISTED = "status unknown: the batch system's listing shows none of this cluster's jobs"


@dataclass(frozen=True)
class Vanish:
    """How long a job may be missing from every status command before it is declared ended.

    Both conditions must hold: ``polls`` successful polls in a row without the job, and
    ``seconds`` since it was first missed. ``state``/``reason``: what a vanished job that was
    running is declared (a job last seen waiting is declared cancelled).
    """

    polls: int = 3
    seconds: float = 30.0
    state: JobState = JobState.LOST
    reason: str = "no longer known to the batch system"


class JobTracker:
    """Records of the live jobs of one cluster, by job id, plus the recently ended ones.

    Parameters
    ----------
    vanish : Vanish
        The grace rule for jobs the batch system no longer lists.
    keep_ended : int
        How many ended records to keep for display.
    """

    def __init__(self, vanish: Vanish | None = None, keep_ended: int = 50):
        self.vanish = vanish or Vanish()
        self.keep_ended = keep_ended
        self._live: dict[str, JobRecord] = {}
        self._by_name: dict[str, str] = {}
        self._ended: list[JobRecord] = []
        self._missing: dict[str, tuple[int, float]] = {}  # id -> (polls missed, first missed)
        self._final_held: dict[str, JobStatus] = {}  # final status held back while connected
        self._interrupted: list[tuple[JobRecord, JobStatus]] = []  # not yet taken
        #: When the current listing outage began (the ``now`` of its first poll), else None.
        self.unlisted_since: float | None = None

    # ------------------------------------------------------------------ membership

    def add(
        self, name: str, job_id: str, workers_expected: int, now: float, pool: str | None = None
    ) -> JobRecord:
        """Start tracking a job that was just submitted (``pool``: the pool it belongs to)."""
        if job_id in self._live:
            raise ValueError(f"job id {job_id} is already tracked for {self._live[job_id].name}")
        record = JobRecord(
            name=name,
            job_id=job_id,
            workers_expected=workers_expected,
            submitted_at=now,
            pool=pool,
        )
        self._live[job_id] = record
        self._by_name[name] = job_id
        return record

    def get(self, job_id: str) -> JobRecord | None:
        """The record of a live job by its batch id (``None``: not live)."""
        return self._live.get(job_id)

    def by_name(self, name: str) -> JobRecord | None:
        """The record of a live job by the cluster's name for it (``None``: not live)."""
        job_id = self._by_name.get(name)
        return None if job_id is None else self._live.get(job_id)

    def __contains__(self, job_id: object) -> bool:
        return job_id in self._live

    def __len__(self) -> int:
        return len(self._live)

    @property
    def live(self) -> list[JobRecord]:
        """Records of jobs not ended yet, in submission order."""
        return list(self._live.values())

    @property
    def ended(self) -> list[JobRecord]:
        """Records of recently ended jobs (a bounded history), oldest first."""
        return list(self._ended)

    def live_ids(self) -> list[str]:
        """Batch ids of the jobs not ended yet, in submission order."""
        return list(self._live)

    def forget(self, job_id: str, state: JobState, reason: str, now: float) -> JobRecord | None:
        """Stop tracking a job the cluster itself let go of (cancelled, scaled down)."""
        record = self._live.get(job_id)
        if record is None:
            return None
        if not record.state.is_final:
            record.apply(JobStatus(state, reason), now)
        self._retire(record)
        return record

    def _retire(self, record: JobRecord) -> None:
        self._live.pop(record.job_id, None)
        if self._by_name.get(record.name) == record.job_id:
            del self._by_name[record.name]
        self._missing.pop(record.job_id, None)
        self._final_held.pop(record.job_id, None)
        self._ended.append(record)
        del self._ended[: -self.keep_ended]

    # ------------------------------------------------------------------ connections

    def set_connected(self, counts: Mapping[str, int], now: float) -> tuple[bool, list[JobRecord]]:
        """Connected workers per job *name*, from the Dask scheduler.

        Returns whether any state changed, and the jobs that just connected for the first time.
        A job whose final state was held back because workers were still connected ends once
        they are gone: :meth:`take_disconnected_finals` then returns it.
        """
        changed = False
        first_connect = []
        for record in self._live.values():
            was = record.ever_connected
            changed |= record.set_connected_workers(counts.get(record.name, 0), now)
            if record.ever_connected and not was:
                first_connect.append(record)
        return changed, first_connect

    # ------------------------------------------------------------------ polls

    def observe(
        self,
        statuses: Mapping[str, JobStatus],
        polled: Iterable[str],
        now: float,
        denied: Iterable[str] = (),
        outage: bool | None = None,
    ) -> tuple[bool, list[tuple[JobRecord, JobStatus]]]:
        """Apply one successful poll: ``statuses`` for the ``polled`` ids it mentions.

        ``denied``: ids the batch system said it does not know (``Invalid job id``), which
        are missing for sure; any other missing id may only be missing from a listing that
        failed silently (see :meth:`listing_outage`). ``outage``: that judgement, made by the
        caller over the whole poll when it applies the poll in parts (default: judged on
        ``polled``).

        Returns whether anything visible changed, and the jobs that ended in this poll, each
        with the status that ended it (``stuck`` tells the engine to cancel it).
        """
        polled = [i for i in dict.fromkeys(polled) if i in self._live]
        if outage is None:
            outage = self.listing_outage(statuses, polled, denied)
        if outage:
            if self.unlisted_since is None:
                self.unlisted_since = now
        else:
            self.unlisted_since = None
        denied = set(denied)
        changed = False
        ended: list[tuple[JobRecord, JobStatus]] = []
        for job_id in polled:
            record = self._live[job_id]
            status = statuses.get(job_id)
            if status is None and outage and job_id not in denied:
                changed |= record.apply(
                    JobStatus(
                        record.state if record.state != JobState.CONNECTED else JobState.RUNNING,
                        _UNLISTED,
                        None,
                        record.native_state,
                    ),
                    now,
                )
                continue
            if status is None:
                status = self._vanished(record, now)
                if status is None:
                    continue
            else:
                self._missing.pop(job_id, None)
            seen = (record.interruption, record.requeues)
            if status.state.is_final and record.workers_connected:
                # The workers are the truth: the job lives while they are connected.
                self._final_held[job_id] = status
                changed |= record.apply(
                    JobStatus(
                        JobState.RUNNING,
                        f"{status.state.value} according to the batch system, "
                        "but its workers are still connected",
                        None,
                        status.native_state,
                        interruption=status.interruption,
                        interrupted_at=status.interrupted_at,
                    ),
                    now,
                )
                self._note_interruption(record, status, seen)
                continue
            self._final_held.pop(job_id, None)
            changed |= record.apply(status, now)
            if record.state.is_final:
                ended.append((record, status))
            else:
                self._note_interruption(record, status, seen)
        for record, _ in ended:
            self._retire(record)
        return changed, ended

    @staticmethod
    def listing_outage(
        statuses: Mapping[str, JobStatus], polled: Iterable[str], denied: Iterable[str] = ()
    ) -> bool:
        """Whether a poll of ``polled`` is a listing outage: some id is missing (no status,
        not ``denied``) and no id is seen alive (a non-final status). A final status may
        come from accounting, so it does not prove that the listing works."""
        denied = set(denied)
        missing = False
        for job_id in polled:
            status = statuses.get(job_id)
            if status is None:
                missing |= job_id not in denied
            elif not status.state.is_final:
                return False
        return missing

    def _note_interruption(
        self, record: JobRecord, status: JobStatus, seen: tuple[object, int]
    ) -> None:
        if record.interruption is not None and (record.interruption, record.requeues) != seen:
            self._interrupted.append((record, status))

    def take_interrupted(self) -> list[tuple[JobRecord, JobStatus]]:
        """Jobs seen preempted, suspended or requeued since the last call (each event once),
        with the status that showed it; jobs that ended since are left out."""
        taken = [(r, s) for r, s in self._interrupted if r.job_id in self._live]
        self._interrupted = []
        return taken

    def take_disconnected_finals(self, now: float) -> list[tuple[JobRecord, JobStatus]]:
        """Jobs whose final state was held back and whose workers have all left since."""
        ended = []
        for job_id, status in list(self._final_held.items()):
            record = self._live.get(job_id)
            if record is None:
                self._final_held.pop(job_id, None)
                continue
            if record.workers_connected:
                continue
            record.apply(status, now)
            ended.append((record, status))
        for record, _ in ended:
            self._retire(record)
        return ended

    def _vanished(self, record: JobRecord, now: float) -> JobStatus | None:
        polls, first = self._missing.get(record.job_id, (0, now))
        polls += 1
        self._missing[record.job_id] = (polls, first)
        waited = now - first
        rule = self.vanish
        if polls < rule.polls or waited < rule.seconds:
            if record.state.is_waiting or record.state in (JobState.RUNNING, JobState.CONNECTED):
                return JobStatus(
                    record.state if record.state != JobState.CONNECTED else JobState.RUNNING,
                    "not listed by the batch system; waiting for its final record",
                    None,
                    record.native_state,
                )
            return None
        if record.state.is_waiting and not record.ever_connected:
            return JobStatus(
                JobState.CANCELLED,
                "left the queue before it ran (no final record)",
                None,
                None,
                stuck=True,
            )
        # Inferred, not reported: it is cancelled before anything replaces it.
        return JobStatus(rule.state, rule.reason, None, None, stuck=True)
