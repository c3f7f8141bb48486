"""Supervision of one cluster's jobs, in one place.

The supervisor owns what happens to jobs once the cluster wants them: it submits them through
the engine and tracks them (:class:`~dask_jobqueue.tracker.JobTracker`), polls their states
(:class:`~dask_jobqueue.poller.JobPoller`), decides what an ended job means
(:class:`~dask_jobqueue.policy.FailurePolicy`: replace, back off, open the breaker) and what a
preempted, requeued or suspended job means (retire its workers, keep or replace it), replaces
jobs ahead of their walltime (:class:`~dask_jobqueue.lifetime.LifetimePlanner`), and wires the
watchdog and the exit finalizer that cancel the jobs if this process dies.

Every replacement goes through :meth:`JobSupervisor.replace`. The cluster stays the
``SpecCluster`` side: which jobs are wanted (``worker_spec``), which run (``workers``), and
the Dask scheduler; the supervisor reaches it only through :class:`SupervisedCluster`.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
import weakref
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol

from .job import JobFailedError, explain_death
from .lifetime import LifetimePlanner
from .policy import FailurePolicy
from .poller import JobPoller, PollInterval
from .tracker import JobTracker
from .tracking import JobRecord, JobState, JobStatus
from .walltime import job_walltime
from .watchdog import Watchdog, state_for

if TYPE_CHECKING:
    from .engine import BatchSystem
    from .job import Job
    from .options import EngineSettings
    from .tracker import Vanish

logger = logging.getLogger(__name__)

__all__ = ["JobSupervisor", "SupervisedCluster"]

#: Jobs handled between two yields to the event loop when thousands start or stop at once
#: (the loop also serves the Dask scheduler: no stall beyond a few tens of milliseconds).
LOOP_CHUNK = 500


class SupervisedCluster(Protocol):
    """What the supervisor needs from the cluster it serves."""

    #: Jobs the cluster wants, by name (``SpecCluster.worker_spec``).
    worker_spec: dict[str, Any]
    #: Jobs submitted and not ended, by name (``SpecCluster.workers``).
    workers: dict[str, Any]

    @property
    def closing(self) -> bool:
        """True once the cluster is closing or closed: nothing is replaced then."""

    def new_job_name(self) -> str:
        """A job name never used before in this cluster."""

    def connected_workers(self) -> dict[str, int]:
        """Connected Dask workers per job name."""

    async def retire_job_workers(self, names: Sequence[str], close: bool = False) -> None:
        """Retire the Dask workers of these jobs (their data moves elsewhere); ``close``:
        the workers exit too."""

    async def correct_state(self) -> None:
        """Submit what is wanted and not running, cancel what runs and is not wanted."""

    def correct_state_later(self, delay: float) -> None:
        """Call :meth:`correct_state` after ``delay`` seconds."""


class JobSupervisor:
    """Tracks, polls, replaces and cleans up the jobs of one cluster.

    Parameters
    ----------
    cluster : SupervisedCluster
        The cluster served.
    engine : BatchSystem
        Runs the batch system's commands.
    settings : EngineSettings
        Poll intervals, failure policy, walltime plan, watchdog.
    vanish : Vanish
        The dialect's rule for jobs that disappear from the listing.
    workers_per_job : int
        Dask workers each job starts.
    owned_files : list of str
        Files removed by the watchdog if this process dies (the workers' TLS credentials).
    pool : str, optional
        The pool these jobs belong to, shown in the job table.
    """

    def __init__(
        self,
        cluster: SupervisedCluster,
        engine: BatchSystem,
        settings: EngineSettings,
        vanish: Vanish,
        workers_per_job: int,
        owned_files: list[str] | None = None,
        pool: str | None = None,
    ):
        self.cluster = cluster
        #: The pool whose jobs these are (None: the cluster's own).
        self.pool = pool
        self.engine = engine
        self.settings = settings
        self.workers_per_job = workers_per_job
        self.tracker = JobTracker(dataclasses.replace(vanish, seconds=settings.vanish_grace))
        self.policy = FailurePolicy(settings.max_consecutive_failures, settings.resubmit_backoff)
        self.poller = JobPoller(
            engine,
            self.tracker,
            PollInterval(settings.poll_interval, settings.poll_interval_max),
            cluster.connected_workers,
            self.policy.connected,
            self.jobs_ended,
            self.jobs_interrupted,
        )
        #: Retirement and pre-submission plan, once the walltime is known (else None).
        self.lifetime: LifetimePlanner | None = None
        self._lifetime_task: asyncio.Task | None = None
        #: Jobs replaced ahead of their walltime, still running until their workers retire.
        self.expiring: set[str] = set()
        #: An error to raise at the next scale()/adapt()/wait (a failed submission, the breaker).
        self.pending_error: BaseException | None = None
        self._resubmit_not_before: dict[str, float] = {}
        self._submissions: set[asyncio.Future] = set()
        self._retirements: set[asyncio.Future] = set()
        # A process that cancels the jobs if this one dies without closing the cluster.
        self.watchdog = _watchdog_for(engine, owned_files) if settings.owner_watchdog else None
        # Cancels, at interpreter exit, whatever the engine created and did not see end.
        self._exit_finalizer = weakref.finalize(self, _cancel_at_exit, engine, self.watchdog)

    # ------------------------------------------------------------------ lifecycle

    def start_watchdog(self) -> None:
        """Start the watchdog process (idempotent; a failure to start it is logged)."""
        if self.watchdog is not None and self.watchdog.process is None:
            try:
                self.watchdog.start()
            except OSError as exc:
                logger.warning(
                    "Could not start the watchdog (jobs may outlive a killed client): %s", exc
                )

    def keep_jobs_at_exit(self) -> None:
        """Leave the jobs in the queue when this process ends without closing the cluster
        (``keep_alive``: they stay for another process to attach; the scheduler's lease
        ends them otherwise)."""
        self._exit_finalizer.detach()

    def adopt(self, name: str, job_id: str) -> None:
        """Track the job ``job_id`` (job name ``name``) that another process submitted."""
        self.engine.adopt([job_id])
        self.tracker.add(name, job_id, self.workers_per_job, time.time(), pool=self.pool)
        self.poller.wake()

    def start(self) -> None:
        """Start the poller and the walltime plan (on the running event loop)."""
        self.poller.start()
        if self.settings.replace_before_walltime and self._lifetime_task is None:
            self._lifetime_task = asyncio.ensure_future(self._run_lifetime())

    async def stop_submitting(self) -> None:
        """First step of closing: no more replacements; hung submissions are abandoned
        (their threads cancel what they create)."""
        if self._lifetime_task is not None:
            self._lifetime_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._lifetime_task
            self._lifetime_task = None
        self.expiring.clear()
        self.engine.close()
        for submission in list(self._submissions):
            submission.cancel()
        for retirement in list(self._retirements):
            retirement.cancel()

    async def close(self) -> None:
        """Last step of closing: stop polling, cancel every job left, stop the watchdog."""
        await self.poller.stop()
        # Jobs that ended are released already; anything the engine still holds is cancelled
        # here (what it cannot cancel stays with the exit finalizer, with a warning).
        leftover = self.engine.live_ids
        if leftover:
            await self.engine.cancel(sorted(leftover))
        # jobs of submissions whose output could not be read, not found by their tag then
        await self.engine.cancel_unsettled()
        if self.watchdog is not None and not self.engine.live_ids:
            # With jobs left that could not be cancelled, the watchdog stays as a second
            # chance (it cancels them when this process ends; so does the exit finalizer).
            self.watchdog.stop()

    # ------------------------------------------------------------------ errors

    def raise_if_failed(self) -> None:
        """Raise the pending error, if any (it stays pending)."""
        if self.pending_error is not None:
            raise self.pending_error

    def take_pending_error(self) -> BaseException | None:
        """Return the pending error and re-arm submission: the user asked again."""
        error, self.pending_error = self.pending_error, None
        self.policy.rearm()
        return error

    # ------------------------------------------------------------------ wanted jobs

    def may_submit(self, name: str, now: float) -> bool:
        """Whether the wanted job ``name`` may be submitted now (breaker, backoff)."""
        return not self.policy.breaker_open and self._resubmit_not_before.get(name, 0) <= now

    def drop_order(self, names: Sequence[str]) -> list[str]:
        """``names`` (wanted jobs, oldest first) in the order to drop them when scaling down:
        jobs with no worker connected first (queued ones), newest first."""
        position = {name: k for k, name in enumerate(names)}

        def keep_priority(name: str) -> tuple[int, int]:
            record = self.tracker.by_name(name)
            connected = 1 if record is not None and record.workers_connected else 0
            return (connected, -position[name])

        return sorted(names, key=keep_priority)

    def unwanted(self, name: str) -> None:
        """The cluster no longer wants the job ``name``."""
        self._resubmit_not_before.pop(name, None)

    def nothing_wanted(self) -> None:
        """Scaled to zero: nothing is kept running until its replacement arrives."""
        self.expiring.clear()

    def replace(self, name: str) -> str | None:
        """Move the wanted job ``name`` to a fresh name: the replacement's.

        Workers of the old job may still be around under the old name, so a replacement
        never reuses it. Returns the new name, or ``None`` if ``name`` is no longer wanted.
        """
        spec = self.cluster.worker_spec.pop(name, None)
        if spec is None:
            return None
        new_name = self.cluster.new_job_name()
        self.cluster.worker_spec[new_name] = spec
        return new_name

    # ------------------------------------------------------------------ submit and cancel

    async def start_jobs(self, built: Sequence[tuple[str, Job]]) -> list[tuple[str, Job]]:
        """Submit these jobs in one engine call (identical ones go as job arrays) and track
        the accepted ones; return those (the cluster records them as running).

        A submit error is a configuration problem or a broken batch system: it is logged
        once and kept for the next ``scale``/``adapt``, which retries.
        """
        jobs = [job for _, job in built]
        submission = asyncio.ensure_future(self.engine.submit_many(jobs))
        self._submissions.add(submission)
        try:
            results = (await asyncio.gather(submission, return_exceptions=True))[0]
        finally:
            self._submissions.discard(submission)
        if isinstance(results, BaseException):
            results = [results] * len(jobs)
        errors = []
        accepted = []
        now = time.time()
        for k, ((name, job), result) in enumerate(zip(built, results, strict=True)):
            if k and k % LOOP_CHUNK == 0:
                await asyncio.sleep(0)
            if isinstance(result, BaseException):
                job.mark_closed()
                if not isinstance(result, asyncio.CancelledError):
                    errors.append(result)
                continue
            if self.cluster.closing:
                job.mark_closed()  # the engine cancels it with everything else at close
                continue
            accepted.append((name, job))
            self._resubmit_not_before.pop(name, None)
            self.tracker.add(name, result, self.workers_per_job, now, pool=self.pool)
        if errors:
            error = errors[0]
            logger.error("Submitting %d job(s) failed: %s", len(errors), error)
            self.pending_error = error
            self.policy.submit_failed()
        self.poller.wake()
        return accepted

    async def stop_jobs(
        self, jobs: Sequence[tuple[str, Job]], reason: str = "cancelled by the cluster"
    ) -> None:
        """Retire the workers of these jobs, then cancel the jobs (in as few commands as the
        batch system takes ids in one). The cluster dropped them from ``workers`` already."""
        now = time.time()
        ids = []
        for k, (_, job) in enumerate(jobs):
            if k and k % LOOP_CHUNK == 0:
                await asyncio.sleep(0)
            if job.job_id is not None:
                # forgotten first, so the poller does not take the cancellation for a death
                self.tracker.forget(job.job_id, JobState.CANCELLED, reason, now)
                ids.append(job.job_id)
        await self.cluster.retire_job_workers([name for name, _ in jobs])
        if ids:
            await self.engine.cancel(ids)
        for k, (_, job) in enumerate(jobs):
            if k and k % LOOP_CHUNK == 0:
                await asyncio.sleep(0)
            job.mark_closed()

    # ------------------------------------------------------------------ ended jobs

    async def jobs_ended(self, ended: list[tuple[JobRecord, JobStatus]]) -> None:
        """Jobs reached a final state on their own: explain, cancel leftovers, replace."""
        cluster = self.cluster
        now = time.monotonic()
        cap = max(10, 2 * len(cluster.worker_spec))
        to_cancel: list[str] = []
        over: set[str] = set()  # of those, the ones the batch system itself reports ended
        finished: list[str] = []
        to_replace: list[tuple[str, float]] = []
        interrupted: dict[str, JobRecord] = {}
        for record, status in ended:
            if status.interruption is not None or record.interruption is not None:
                interrupted[record.name] = record
            job = cluster.workers.get(record.name)
            wanted = record.name in cluster.worker_spec and job is not None
            decision = self.policy.job_ended(record, status, wanted, now, cap)
            if job is not None and (
                not record.ever_connected or record.state in (JobState.FAILED, JobState.LOST)
            ):
                record.error = explain_death(job, record)
            (to_cancel if decision.cancel else finished).append(record.job_id)
            if decision.cancel and _ended_by_batch_system(status):
                over.add(record.job_id)
            if job is not None:
                job.mark_closed()
                del cluster.workers[record.name]
            self.expiring.discard(record.name)
            if self.lifetime is not None:
                self.lifetime.forget(record.name)
            if not wanted or cluster.closing:
                continue
            if decision.failure:
                logger.warning("%s", record.error)
            else:
                logger.info(
                    "Job %s (%s) %s; submitting a replacement",
                    record.job_id,
                    record.name,
                    record.state,
                )
            if decision.breaker_opened:
                self.pending_error = JobFailedError(
                    f"{self.policy.consecutive_failures} jobs in a row ended before their "
                    f"workers connected; not resubmitting until scale() or adapt() is called "
                    f"again.\nLast failure: {record.error}",
                    [r for r in self.tracker.ended if r.error][-self.policy.max_failures :],
                )
                logger.error("%s", self.pending_error)
            if decision.replace:
                to_replace.append((record.name, decision.delay))
        self.engine.release(finished)
        if to_cancel:
            # Failed, lost and stuck jobs are cancelled before anything replaces them. A job
            # the batch system reports ended is not left for the watchdog or the exit when
            # that cancel is refused (e.g. "job is not active"): nothing of it can run.
            left = await self.engine.cancel(to_cancel)
            self.engine.release([job_id for job_id in left if job_id in over])
        for name, delay in to_replace:
            new_name = self.replace(name)
            if new_name is None:
                continue
            if name in interrupted:
                interrupted[name].capacity = f"replaced by {new_name}"
            self._resubmit_not_before[new_name] = now + delay
            cluster.correct_state_later(delay + 0.01)

    # ------------------------------------------------------------------ interrupted jobs

    async def jobs_interrupted(self, events: list[tuple[JobRecord, JobStatus]]) -> None:
        """Jobs seen preempted, requeued or suspended: retire the workers of a preempted job
        while its grace period runs, keep a requeued job that can start again by itself,
        replace one held back (Slurm's ``BeginTime``). None of it counts as a failure."""
        cluster = self.cluster
        to_retire: list[str] = []
        to_replace: list[JobRecord] = []
        for record, status in events:
            decision = self.policy.job_interrupted(record, status)
            logger.warning(
                "Job %s (%s) %s%s%s",
                record.job_id,
                record.name,
                record.interruption,
                f" at {record.interrupted_when}" if record.interrupted_when else "",
                "; retiring its workers" if decision.retire else "",
            )
            if decision.retire:
                to_retire.append(record.name)
            if cluster.closing or record.name not in cluster.workers:
                continue
            if decision.keep_requeued:
                record.capacity = "requeued"
            elif decision.replace and record.name in cluster.worker_spec:
                to_replace.append(record)
        if to_retire:
            # in the background: moving the data may take longer than a poll
            retirement = asyncio.ensure_future(cluster.retire_job_workers(to_retire, close=True))
            self._retirements.add(retirement)
            retirement.add_done_callback(self._retirement_done)
        if not to_replace:
            return
        jobs = []
        for record in to_replace:
            new_name = self.replace(record.name)
            record.capacity = f"replaced by {new_name}"
            logger.info(
                "Job %s (%s) was requeued but is held (%s): replaced by %s",
                record.job_id,
                record.name,
                record.reason,
                new_name,
            )
            jobs.append((record.name, cluster.workers.pop(record.name)))
        await self.stop_jobs(jobs, "cancelled while held after the requeue")
        await cluster.correct_state()

    def _retirement_done(self, retirement: asyncio.Future) -> None:
        self._retirements.discard(retirement)
        if not retirement.cancelled() and retirement.exception() is not None:
            logger.warning(
                "Retiring the workers of a preempted job failed (the batch system ends them "
                "at the end of its grace period): %r",
                retirement.exception(),
            )

    # ------------------------------------------------------------------ walltime

    async def _run_lifetime(self) -> None:
        """Replace jobs ahead of their walltime and retire their workers before it."""
        try:
            walltime = await job_walltime(self.engine)
        except ValueError as exc:  # a walltime the dialect's forms cannot read
            logger.warning("Walltime unknown, no replacement ahead of it: %s", exc)
            return
        if walltime is None:
            logger.debug("Walltime unknown: jobs are replaced only after they end")
            return
        try:
            self.lifetime = LifetimePlanner(
                walltime, self.settings.walltime_margin, self.settings.walltime_stagger
            )
        except ValueError as exc:
            logger.warning("No replacement ahead of the walltime: %s", exc)
            return
        logger.debug(
            "Walltime %gs: workers retire %gs before it (stagger %gs)",
            walltime,
            self.lifetime.margin,
            self.lifetime.stagger,
        )
        while not self.cluster.closing:
            try:
                await self.lifetime_step(time.time())
            except asyncio.CancelledError:
                raise
            except Exception:  # the loop must outlive any one failed step
                logger.exception("Walltime handling step failed")
            await asyncio.sleep(1.0)

    async def lifetime_step(self, now: float) -> None:
        """One pass of the walltime plan: pre-submit replacements, retire what is due."""
        planner = self.lifetime
        if planner is None:
            return
        cluster = self.cluster
        self.poller.refresh_connected()
        running = []
        for record in self.tracker.live:
            if record.ever_connected:
                planner.connected(record.name, record.submitted_at, now)
            if record.started_at is not None and record.name in cluster.workers:
                running.append((record.name, record.started_at))
        presubmit, retire = planner.due(running, now)
        replaced = False
        for name in presubmit:
            # Only jobs the cluster still wants are replaced (not those scaled away), and
            # not while the breaker holds submissions back.
            if name not in cluster.worker_spec or self.policy.breaker_open:
                continue
            new_name = self.replace(name)
            self.expiring.add(name)
            replaced = True
            logger.info(
                "Job %s reaches its walltime soon: submitted its replacement %s", name, new_name
            )
        if replaced:
            await cluster.correct_state()
        to_retire = [name for name in retire if name in cluster.workers]
        for name in to_retire:
            # not replaced yet (breaker open, or the lead was too short): replace it now
            self.replace(name)
            self.expiring.discard(name)
            planner.forget(name)
        if to_retire:
            logger.info("Retiring the workers of %s ahead of the walltime", ", ".join(to_retire))
            jobs = [(name, cluster.workers.pop(name)) for name in to_retire]
            await self.stop_jobs(jobs, "retired ahead of its walltime")
            if any(name not in cluster.workers for name in cluster.worker_spec):
                await cluster.correct_state()


def _ended_by_batch_system(status: JobStatus) -> bool:
    """Whether the batch system itself reports the job ended: not a job that vanished from
    its listings (lost: it may still run) nor one stuck in an error state it keeps."""
    return status.state.is_final and status.state is not JobState.LOST and not status.stuck


def _watchdog_for(engine: Any, owned_files: list[str] | None = None) -> Watchdog | None:
    """The watchdog of ``engine``'s jobs (not started), told of each change of its live jobs
    (O(change): a journal line per id) and of how the engine would cancel them; it also
    removes ``owned_files`` (the workers' TLS credentials) if this process dies.
    ``None`` if the batch system cancels nothing."""
    state = state_for(engine, owned_files=owned_files or ())
    if state is None:
        return None
    watchdog = Watchdog(state, planner=engine.cancel_plan)
    engine.on_live_change = watchdog.record
    return watchdog


def _cancel_at_exit(engine: Any, watchdog: Watchdog | None) -> None:
    engine.cancel_sync()
    if watchdog is not None and not engine.live_ids:
        watchdog.stop()  # else it retries the cancels once this process is gone
