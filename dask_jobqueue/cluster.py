"""The cluster shared by every batch system, on ``distributed.SpecCluster``.

It starts and retires whole jobs, submits identical ones as job arrays, cancels them in as few
commands as the batch system allows (a batch of ids per command; one id per ``qdel`` on PBS),
polls their states every interval (the dialect's listing, plus its accounting command for jobs
the listing no longer shows), explains and replaces jobs that die,
stops resubmitting after repeated failures (circuit breaker), and cancels everything at close
or interpreter exit.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import math
import sys
import time
import warnings
import weakref
from typing import Any

from dask.utils import parse_timedelta
from distributed.core import Status
from distributed.deploy.adaptive import Adaptive
from distributed.deploy.spec import SpecCluster
from distributed.scheduler import Scheduler
from distributed.security import Security

from ._values import parse_duration, parse_memory, parse_positive_int
from .adaptive import JobAdaptive, WorkerJobKey
from .job import PLACEHOLDER_SCHEDULER, Job, JobFailedError, explain_death
from .lifetime import LifetimePlanner
from .options import (
    CLUSTER_OPTIONS,
    Option,
    ParametersDocumented,
    check_cluster_arguments,
    resolve_engine_settings,
    resolve_options,
)
from .policy import FailurePolicy
from .poller import JobPoller, PollInterval
from .tls import prepare_security, remove_files, scheduler_spec
from .tracker import JobTracker
from .tracking import JobRecord, JobState, JobStatus, JobTable
from .walltime import job_walltime
from .watchdog import Watchdog, state_for

logger = logging.getLogger(__name__)

__all__ = ["JobQueueCluster"]

#: Jobs handled between two yields to the event loop when thousands start at once (the
#: loop also serves the Dask scheduler: no stall beyond a few tens of milliseconds).
_LOOP_CHUNK = 500


class JobQueueCluster(ParametersDocumented, SpecCluster):
    """A Dask cluster whose workers run in batch jobs.

    Every keyword is resolved as: the keyword, then ``jobqueue.<config_name>.<key>`` in the
    dask config, then the built-in default. Keywords that are not the cluster's own go to the
    job class.
    """

    #: The job class (on an instance: the one it runs, never ``None``).
    job_cls: type[Job] | None = None

    @classmethod
    def documented_options(cls) -> list[Option]:
        """The cluster's keywords, then those of its job class (as in the docstring)."""
        names = {o.name for o in CLUSTER_OPTIONS}
        job_cls = cls.job_cls or Job
        job_options = [
            o
            for o in job_cls.documented_options()
            if o.name not in names and o.name not in ("scheduler", "name")
        ]
        return [*CLUSTER_OPTIONS, *job_options]

    def __init__(
        self,
        n_workers: int = 0,
        job_cls: type[Job] | None = None,
        loop: Any = None,
        security: Security | bool | None = None,
        shared_temp_directory: str | None = None,
        silence_logs: str | bool = "error",
        name: str | None = None,
        asynchronous: bool = False,
        dashboard_address: str | None = None,
        host: str | None = None,
        scheduler_options: dict | None = None,
        scheduler_cls: type = Scheduler,
        interface: str | None = None,
        protocol: str | None = None,
        config_name: str | None = None,
        **job_kwargs: Any,
    ):
        job_cls, config_name = check_cluster_arguments(
            type(self).__name__,
            job_cls or type(self).job_cls,
            config_name,
            job_kwargs,
            dashboard_address=dashboard_address,
            host=host,
        )
        self.job_cls = job_cls
        self.config_name = config_name
        given = {
            "n_workers": n_workers,
            "security": security,
            "shared_temp_directory": shared_temp_directory,
            "silence_logs": silence_logs,
            "name": name,
            "asynchronous": asynchronous,
            "scheduler_options": scheduler_options,
            "scheduler_cls": scheduler_cls,
            "interface": interface,
            "protocol": protocol,
        }
        resolved = resolve_options(
            [o for o in CLUSTER_OPTIONS if o.name in given], config_name, given, type(self)
        )
        n_workers = resolved["n_workers"]
        interface = resolved["interface"]
        protocol = resolved["protocol"]
        security = resolved["security"]
        scheduler_options = resolved["scheduler_options"] or {}
        #: Directory where temporary TLS credentials are written (keyword or config).
        self.shared_temp_directory: str | None = resolved["shared_temp_directory"]
        self._tls_files: list[str] = []
        security, worker_security, protocol = prepare_security(
            security, protocol, self.shared_temp_directory, self._tls_files
        )
        scheduler = scheduler_spec(scheduler_cls, protocol, security, interface, scheduler_options)

        job_kwargs = dict(job_kwargs)
        job_kwargs["config_name"] = config_name
        job_kwargs["interface"] = interface
        job_kwargs["protocol"] = protocol
        job_kwargs["security"] = worker_security
        self._job_kwargs = job_kwargs

        # Validates every option (and emits deprecation warnings) once, before anything runs.
        template = job_cls(PLACEHOLDER_SCHEDULER, name="dummy-name", **job_kwargs)
        self._template_job = template
        self.processes = template.worker_processes
        self._job_cores = template.worker_cores
        self._job_memory = template.worker_memory
        group = [f"-{i}" for i in range(self.processes)] if self.processes > 1 else None
        worker = {"cls": job_cls, "options": job_kwargs}
        if group:
            worker["group"] = group
        self._group_suffixes = group or []

        settings = resolve_engine_settings(config_name)
        self._engine = template.batch_system_cls.from_settings(template, settings)
        self._tracker = JobTracker(
            dataclasses.replace(job_cls.vanish, seconds=settings.vanish_grace)
        )
        self._policy = FailurePolicy(settings.max_consecutive_failures, settings.resubmit_backoff)
        self._poller = JobPoller(
            self._engine,
            self._tracker,
            PollInterval(settings.poll_interval, settings.poll_interval_max),
            self._connected_counts,
            self._policy.connected,
            self._jobs_ended,
        )
        self._settings = settings
        #: Retirement and pre-submission plan, once the walltime is known (else None).
        self._lifetime: LifetimePlanner | None = None
        self._lifetime_task: asyncio.Task | None = None
        #: Jobs replaced ahead of their walltime, still running until their workers retire.
        self._expiring: set[str] = set()
        self._pending_error: BaseException | None = None
        self._resubmit_not_before: dict[str, float] = {}
        self._submissions: set[asyncio.Future] = set()
        # A process that cancels the jobs if this one dies without closing the cluster.
        self._watchdog = (
            _watchdog_for(self._engine, self._tls_files) if settings.owner_watchdog else None
        )
        # Cancels, at interpreter exit, whatever the engine created and did not see end.
        self._exit_finalizer = weakref.finalize(self, _cancel_at_exit, self._engine, self._watchdog)

        super().__init__(
            scheduler=scheduler,
            worker=worker,
            loop=loop,
            security=security,
            silence_logs=silence_logs,
            asynchronous=asynchronous,
            name=name,
        )
        if n_workers:
            self._check_job_cap(math.ceil(n_workers / self.processes), f"n_workers={n_workers}")
            self._scale_to_workers(n_workers)

    # ------------------------------------------------------------------ scripts & names

    @property
    def _dummy_job(self) -> Job:
        """A job of this cluster named ``dummy-name``, built fresh (upstream kept this name)."""
        address = PLACEHOLDER_SCHEDULER
        if self.scheduler is not None and getattr(self.scheduler, "address", None):
            address = getattr(self.scheduler, "contact_address", None) or self.scheduler.address
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            job_cls = self.job_cls
            assert job_cls is not None  # set by __init__
            return job_cls(address, name="dummy-name", **self._job_kwargs)

    def job_script(self) -> str:
        """The batch script a job of this cluster would be submitted with."""
        return self._dummy_job.job_script()

    @property
    def job_header(self) -> str:
        return self._dummy_job.job_header

    @property
    def job_name(self) -> str:
        return self._template_job.job_name

    def _new_worker_name(self, worker_number: int) -> str:
        return f"{self._name}-{worker_number}"

    def new_worker_spec(self) -> dict:
        """Name and spec of the next job. Names are never reused: a worker's name always
        identifies one job, also when an old job's workers are still connected."""
        name = self._new_worker_name(self._i)
        while name in self.worker_spec or name in self.workers:
            self._i += 1
            name = self._new_worker_name(self._i)
        self._i += 1
        return {name: self.new_spec}

    # ------------------------------------------------------------------ lifecycle

    async def _start(self) -> None:
        if self._watchdog is not None and self._watchdog.process is None:
            try:
                self._watchdog.start()
            except OSError as exc:
                logger.warning(
                    "Could not start the watchdog (jobs may outlive a killed client): %s", exc
                )
        await super()._start()
        self._poller.start()
        if self._settings.replace_before_walltime and self._lifetime_task is None:
            self._lifetime_task = asyncio.ensure_future(self._run_lifetime())

    async def _close(self) -> None:
        if self.status == Status.closed:
            return
        if self._lifetime_task is not None:
            self._lifetime_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._lifetime_task
            self._lifetime_task = None
        self._expiring.clear()
        # Hung submissions are abandoned at once: their threads cancel what they create.
        self._engine.close()
        for submission in list(self._submissions):
            submission.cancel()
        if self.status == Status.running:
            await self._retire_everything()
        await super()._close()
        await self._poller.stop()
        # Jobs that ended are released already; anything the engine still holds is cancelled
        # here (what it cannot cancel stays with the exit finalizer, with a warning).
        leftover = self._engine.live_ids
        if leftover:
            await self._engine.cancel(sorted(leftover))
        # jobs of submissions whose output could not be read, not found by their tag then
        await self._engine.cancel_unsettled()
        if self._watchdog is not None and not self._engine.live_ids:
            # With jobs left that could not be cancelled, the watchdog stays as a second
            # chance (it cancels them when this process ends; so does the exit finalizer).
            self._watchdog.stop()
        remove_files(self._tls_files)

    async def _retire_everything(self, timeout: float = 10.0) -> None:
        """Retire every worker and cancel every job while the scheduler still runs.

        Workers still connected when the scheduler stops make distributed log tracebacks
        (``add_worker`` cancelled); retired first, they leave cleanly. A worker that connects
        meanwhile (its job started just now) is retired too, within ``timeout``.
        """
        with contextlib.suppress(AttributeError):
            self._adaptive.stop()
        self._scale_to_jobs(0)
        await self._correct_state()
        deadline = time.monotonic() + timeout
        while self.scheduler_comm is not None and time.monotonic() < deadline:
            try:
                info = await asyncio.wait_for(self.scheduler_comm.identity(), timeout)
            except (OSError, asyncio.TimeoutError):
                return
            addresses = list(info.get("workers", {}))
            if not addresses and not self._worker_connections():
                return
            if addresses:
                with contextlib.suppress(OSError, asyncio.TimeoutError):
                    await asyncio.wait_for(
                        self.scheduler_comm.retire_workers(workers=addresses),
                        max(0.1, deadline - time.monotonic()),
                    )
            await asyncio.sleep(0.1)

    def _worker_connections(self) -> int:
        """Worker connections the in-process scheduler still serves (0 if not in-process).

        A retired worker's connection handler (``register-worker``) runs until the worker
        process hangs up; the scheduler stopping before that logs a ``CancelledError``.
        """
        comms = getattr(self.scheduler, "_comms", None)
        if not isinstance(comms, dict):
            return 0
        return sum(1 for op in list(comms.values()) if op == "register-worker")

    def __await__(self):
        async def _():
            if self.status == Status.created:
                await self._start()
            await self.scheduler
            await self._correct_state()
            self._raise_if_failed()
            return self

        return _().__await__()

    def _update_worker_status(self, op: str, msg: Any) -> None:
        # SpecCluster cancels a job when one of its workers leaves the scheduler; with several
        # workers per job and job-state polling, the poller decides when a job is gone instead.
        super(SpecCluster, self)._update_worker_status(op, msg)

    async def _correct_state_internal(self) -> None:
        async with self._lock:
            self._correct_state_waiting = None
            to_close = [
                name
                for name in self.workers
                if name not in self.worker_spec and name not in self._expiring
            ]
            if to_close:
                await self._stop_jobs(to_close)
            if self._policy.breaker_open or self.status in (Status.closing, Status.closed):
                return
            now = time.monotonic()
            to_open = [
                name
                for name in self.worker_spec
                if name not in self.workers and self._resubmit_not_before.get(name, 0) <= now
            ]
            if to_open:
                await self._start_jobs(to_open)

    async def _start_jobs(self, names: list[str]) -> None:
        address = getattr(self.scheduler, "contact_address", None) or self.scheduler.address
        built = []
        for k, name in enumerate(names):
            if k and k % _LOOP_CHUNK == 0:
                await asyncio.sleep(0)  # thousands of jobs: other tasks run in between
            spec = self.worker_spec.get(name)
            if spec is None:
                continue  # scaled away meanwhile
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                job = spec["cls"](address, name=name, **spec.get("options", {}))
            built.append((name, job))
        names = [name for name, _ in built]
        jobs = [job for _, job in built]
        # One call for all: identical jobs go as job arrays (one task per job and name).
        submission = asyncio.ensure_future(self._engine.submit_many(jobs))
        self._submissions.add(submission)
        try:
            results = (await asyncio.gather(submission, return_exceptions=True))[0]
        finally:
            self._submissions.discard(submission)
        if isinstance(results, BaseException):
            results = [results] * len(jobs)
        errors = []
        now = time.time()
        for k, (name, job, result) in enumerate(zip(names, jobs, results, strict=True)):
            if k and k % _LOOP_CHUNK == 0:
                await asyncio.sleep(0)
            if isinstance(result, BaseException):
                job.mark_closed()
                if not isinstance(result, asyncio.CancelledError):
                    errors.append(result)
                continue
            if self.status in (Status.closing, Status.closed):
                job.mark_closed()  # the engine cancels it with everything else at close
                continue
            job.status = Status.running
            job._cluster = weakref.ref(self)
            self._created.add(job)
            self.workers[name] = job
            self._resubmit_not_before.pop(name, None)
            self._tracker.add(name, result, self.processes, now)
        if errors:
            # A submit error is a configuration problem or a broken batch system: say it
            # once, and do not retry until the user asks again (scale/adapt).
            error = errors[0]
            logger.error("Submitting %d job(s) failed: %s", len(errors), error)
            self._pending_error = error
            self._policy.submit_failed()
        self._poller.wake()

    async def _stop_jobs(self, names: list[str], reason: str = "cancelled by the cluster") -> None:
        """Retire the workers of these jobs, then cancel the jobs (in as few commands as the
        batch system takes ids in one)."""
        # Dropped from ``workers`` first (0.9 drops a job from cluster.workers before cancelling
        # it): once the workers have left the scheduler, cluster.workers no longer lists these
        # jobs. Forgotten first too, so the poller does not take the cancellation for a death.
        jobs = [self.workers.pop(name) for name in names if name in self.workers]
        now = time.time()
        ids = []
        for k, job in enumerate(jobs):
            if k and k % _LOOP_CHUNK == 0:
                await asyncio.sleep(0)
            if job.job_id is not None:
                self._tracker.forget(job.job_id, JobState.CANCELLED, reason, now)
                ids.append(job.job_id)
        if self.scheduler.status == Status.running:
            worker_names: set[str] = set()
            for name in names:
                if self._group_suffixes:
                    worker_names.update(f"{name}{s}" for s in self._group_suffixes)
                else:
                    worker_names.add(name)
            addresses = [
                addr
                for addr, info in self.scheduler_info.get("workers", {}).items()
                if str(info.get("name")) in worker_names
            ]
            if addresses:
                with contextlib.suppress(OSError, asyncio.TimeoutError):
                    await self.scheduler_comm.retire_workers(workers=addresses)
        if ids:
            await self._engine.cancel(ids)
        for k, job in enumerate(jobs):
            if k and k % _LOOP_CHUNK == 0:
                await asyncio.sleep(0)
            job.mark_closed()

    # ------------------------------------------------------------------ scaling

    def _raise_if_failed(self) -> None:
        if self._pending_error is not None:
            raise self._pending_error

    def _take_pending_error(self) -> BaseException | None:
        """Return the pending error and re-arm submission: the user asked again."""
        error, self._pending_error = self._pending_error, None
        self._policy.rearm()
        return error

    def _check_job_cap(self, jobs: int, asked: str) -> None:
        """``ValueError`` if ``jobs`` is more than ``max-jobs`` allows (nothing submitted)."""
        cap = self._settings.max_jobs
        if jobs > cap:
            raise ValueError(
                f"{asked} asks for {jobs} jobs, more than this cluster's limit of {cap} "
                f"(jobqueue.{self.config_name}.max-jobs). Every job is tracked in this process; "
                "raise the limit if the batch system and this machine can take that many."
            )

    def _scale_to_workers(self, n: int) -> None:
        self._scale_to_jobs(math.ceil(n / self.processes))

    def _scale_to_jobs(self, target: int) -> None:
        if len(self.worker_spec) > target:
            # Drop jobs whose workers are not connected first (queued, then newest).
            position = {name: k for k, name in enumerate(self.worker_spec)}

            def keep_priority(name: str) -> tuple[int, int]:
                record = self._tracker.by_name(name)
                connected = 1 if record is not None and record.workers_connected else 0
                return (connected, -position[name])

            for name in sorted(self.worker_spec, key=keep_priority)[
                : len(self.worker_spec) - target
            ]:
                del self.worker_spec[name]
                self._resubmit_not_before.pop(name, None)
        if target == 0:
            self._expiring.clear()  # nothing to keep running until its replacement arrives
        if self.status not in (Status.closing, Status.closed):
            while len(self.worker_spec) < target:
                self.worker_spec.update(self.new_worker_spec())
        # distributed types Cluster.loop as IOLoop | None, but it raises rather than return None
        self.loop.add_callback(self._correct_state)  # type: ignore[union-attr]

    async def _scale_to_jobs_on_loop(self, target: int) -> None:
        self._scale_to_jobs(target)

    # dask-jobqueue 0.9's signature (jobs second), not SpecCluster.scale(n, memory, cores)
    def scale(  # type: ignore[override]
        self,
        n: int | None = None,
        jobs: int = 0,
        memory: str | None = None,
        cores: int | None = None,
    ):
        """Scale the cluster to ``jobs`` jobs, or to enough jobs for ``n`` workers and
        ``cores``/``memory`` in total (of these three, the largest wins, as in
        ``distributed``).

        Jobs always hold ``processes`` workers, so worker counts are rounded up to whole jobs.
        ``jobs`` together with ``n``, ``cores`` or ``memory`` is a ``ValueError``: they are
        two answers to one question. An error left by a previous submission (e.g. a
        rejected ``sbatch``) is raised here, and the next call tries again.
        """
        target = parse_positive_int(jobs, "jobs", allow_zero=True)
        others = {"n": n, "cores": cores, "memory": memory}
        if jobs and any(v is not None for v in others.values()):
            given = ", ".join(f"{k}={v!r}" for k, v in others.items() if v is not None)
            raise ValueError(
                f"scale({given}, jobs={jobs!r}): give either jobs or {given}, not both "
                f"(a job holds {self.processes} worker(s))"
            )
        if n is not None:
            target = max(
                target, math.ceil(parse_positive_int(n, "n", allow_zero=True) / self.processes)
            )
        if memory is not None:
            target = max(
                target,
                math.ceil(parse_memory(memory, "memory", allow_zero=True) / self._job_memory),
            )
        if cores is not None:
            target = max(
                target,
                math.ceil(parse_positive_int(cores, "cores", allow_zero=True) / self._job_cores),
            )
        asked = ", ".join(
            f"{k}={v!r}"
            for k, v in (("n", n), ("jobs", jobs), ("memory", memory), ("cores", cores))
            if v is not None and not (k == "jobs" and v == 0)
        )
        self._check_job_cap(target, asked)
        previous_error = self._take_pending_error()
        if self.asynchronous or self.status == Status.closed:
            self._scale_to_jobs(target)
        else:
            # The spec changes on the event loop's thread, all at once: a correction running
            # there meanwhile would otherwise see half of them and submit them apart.
            self.sync(self._scale_to_jobs_on_loop, target)
        if previous_error is not None and target > 0:
            # Scaling down to nothing (and closing) is never refused because of an old error.
            raise previous_error
        if self.asynchronous:
            return _ScalingDone(self)
        return None

    async def _correct_state_and_raise(self) -> None:
        await self._correct_state()
        self._raise_if_failed()

    def _threads_per_worker(self) -> int:
        return self._template_job.worker_process_threads

    def _memory_per_worker(self) -> int:
        return self._template_job.worker_process_memory_bytes

    def adapt(
        self,
        *args: Any,
        minimum_jobs: int | None = None,
        maximum_jobs: int | None = None,
        idle_timeout: str | float | None = None,
        **kwargs: Any,
    ) -> Adaptive:
        """Scale adaptively between limits given in workers (``minimum``/``maximum``) or
        jobs (``minimum_jobs``/``maximum_jobs``); whole jobs are started and retired.

        Jobs without connected workers yet count as capacity that is coming. A job is
        released only once it is not needed and has run no task for ``idle_timeout``
        (default: ``adapt-idle-timeout`` in the config, 60 s); queued jobs go first, running
        ones have their workers retired gracefully, their data moved.

        A limit given both in workers and in jobs, and a minimum above the maximum, are
        ``ValueError`` s."""
        if idle_timeout is not None:
            kwargs["idle_timeout"] = parse_duration(idle_timeout, "idle_timeout")
        for limit, in_jobs in (("minimum", minimum_jobs), ("maximum", maximum_jobs)):
            if in_jobs is not None and kwargs.get(limit) is not None:
                raise ValueError(
                    f"adapt({limit}={kwargs[limit]!r}, {limit}_jobs={in_jobs!r}): give the "
                    f"{limit} in workers or in jobs, not both (a job holds {self.processes} "
                    "worker(s))"
                )
        if minimum_jobs is not None:
            kwargs["minimum"] = (
                parse_positive_int(minimum_jobs, "minimum_jobs", allow_zero=True) * self.processes
            )
        if maximum_jobs is not None:
            kwargs["maximum"] = (
                parse_positive_int(maximum_jobs, "maximum_jobs", allow_zero=True) * self.processes
            )
        maximum = kwargs.get("maximum")
        minimum = kwargs.get("minimum")
        if (
            isinstance(minimum, (int, float))
            and isinstance(maximum, (int, float))
            and minimum > maximum
        ):
            shown = ", ".join(
                f"{k}={v!r}"
                for k, v in (
                    ("minimum", None if minimum_jobs is not None else minimum),
                    ("maximum", None if maximum_jobs is not None else maximum),
                    ("minimum_jobs", minimum_jobs),
                    ("maximum_jobs", maximum_jobs),
                )
                if v is not None
            )
            raise ValueError(
                f"adapt({shown}): the minimum ({minimum} workers) is above the maximum "
                f"({maximum} workers)"
            )
        if isinstance(maximum, int) and not isinstance(maximum, bool) and maximum > 0:
            asked = (
                f"maximum_jobs={maximum_jobs}"
                if maximum_jobs is not None
                else (f"maximum={maximum}")
            )
            self._check_job_cap(math.ceil(maximum / self.processes), asked)
        if self._group_suffixes:
            kwargs.setdefault("worker_key", WorkerJobKey(self._group_suffixes))
        kwargs.setdefault("Adaptive", JobAdaptive)
        previous_error = self._take_pending_error()
        adaptive = super().adapt(*args, **kwargs)
        if previous_error is not None:
            raise previous_error
        return adaptive

    # ------------------------------------------------------------------ job states

    @property
    def jobs(self) -> JobTable:
        """Every job this cluster submitted and still tracks, plus recently ended ones."""
        self._refresh_connected()
        return JobTable([*self._tracker.ended, *self._tracker.live])

    def _refresh_connected(self) -> bool:
        return self._poller.refresh_connected()

    @property
    def status_calls(self) -> int:
        """How many status commands the engine has run (a poll may run several)."""
        return self._engine.commands["status"]

    @property
    def polls(self) -> int:
        """How many polls asked the batch system about the live jobs."""
        return self._poller.polls

    @property
    def failed_polls(self) -> int:
        """How many polls failed (their status commands failed or timed out): job states
        are left unchanged by a failed poll."""
        return self._poller.failed_polls

    @property
    def command_counts(self) -> dict[str, int]:
        """Batch-system commands run so far, by kind (``submit``, ``status``, ``cancel``)."""
        return dict(self._engine.commands)

    def _connected_counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        key = WorkerJobKey(self._group_suffixes)
        for info in self.scheduler_info.get("workers", {}).values():
            job_name = key.job_name(str(info.get("name")))
            counts[job_name] = counts.get(job_name, 0) + 1
        return counts

    async def _jobs_ended(self, ended: list[tuple[JobRecord, JobStatus]]) -> None:
        """Jobs reached a final state on their own: explain, cancel leftovers, replace."""
        now = time.monotonic()
        cap = max(10, 2 * len(self.worker_spec))
        to_cancel: list[str] = []
        finished: list[str] = []
        replace: list[tuple[str, float]] = []
        for record, status in ended:
            job = self.workers.get(record.name)
            wanted = record.name in self.worker_spec and job is not None
            decision = self._policy.job_ended(record, status, wanted, now, cap)
            if job is not None and (
                not record.ever_connected or record.state in (JobState.FAILED, JobState.LOST)
            ):
                record.error = explain_death(job, record)
            (to_cancel if decision.cancel else finished).append(record.job_id)
            if job is not None:
                job.mark_closed()
                del self.workers[record.name]
            self._expiring.discard(record.name)
            if self._lifetime is not None:
                self._lifetime.forget(record.name)
            if not wanted or self.status in (Status.closing, Status.closed):
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
                self._pending_error = JobFailedError(
                    f"{self._policy.consecutive_failures} jobs in a row ended before their "
                    f"workers connected; not resubmitting until scale() or adapt() is called "
                    f"again.\nLast failure: {record.error}",
                    [r for r in self._tracker.ended if r.error][-self._policy.max_failures :],
                )
                logger.error("%s", self._pending_error)
            if decision.replace:
                replace.append((record.name, decision.delay))
        self._engine.release(finished)
        if to_cancel:
            # Failed, lost and stuck jobs are cancelled before anything replaces them.
            await self._engine.cancel(to_cancel)
        for name, delay in replace:
            new_name = self._respec(name)
            if new_name is None:
                continue
            self._resubmit_not_before[new_name] = now + delay
            # Cluster.loop is typed IOLoop | None but never returns None (see _scale_to_jobs)
            self.loop.call_later(delay + 0.01, self._correct_state)  # type: ignore[union-attr]

    def _respec(self, name: str) -> str | None:
        """The job ``name`` is to be replaced: its spec moves to a fresh name (the replacement
        job's), as workers of the old job may still be around under the old one. Returns the
        new name, or ``None`` if the cluster no longer wants ``name``."""
        spec = self.worker_spec.pop(name, None)
        if spec is None:
            return None
        new_name = next(iter(self.new_worker_spec()))
        self.worker_spec[new_name] = spec
        return new_name

    # ------------------------------------------------------------------ walltime

    async def _run_lifetime(self) -> None:
        """Replace jobs ahead of their walltime and retire their workers before it."""
        try:
            walltime = await job_walltime(self._engine)
        except ValueError as exc:  # a walltime the dialect's forms cannot read
            logger.warning("Walltime unknown, no replacement ahead of it: %s", exc)
            return
        if walltime is None:
            logger.debug("Walltime unknown: jobs are replaced only after they end")
            return
        try:
            self._lifetime = LifetimePlanner(
                walltime, self._settings.walltime_margin, self._settings.walltime_stagger
            )
        except ValueError as exc:
            logger.warning("No replacement ahead of the walltime: %s", exc)
            return
        logger.debug(
            "Walltime %gs: workers retire %gs before it (stagger %gs)",
            walltime,
            self._lifetime.margin,
            self._lifetime.stagger,
        )
        while self.status not in (Status.closing, Status.closed):
            try:
                await self._lifetime_step(time.time())
            except asyncio.CancelledError:
                raise
            except Exception:  # the loop must outlive any one failed step
                logger.exception("Walltime handling step failed")
            await asyncio.sleep(1.0)

    async def _lifetime_step(self, now: float) -> None:
        """One pass of the walltime plan: pre-submit replacements, retire what is due."""
        planner = self._lifetime
        if planner is None:
            return
        self._refresh_connected()
        running = []
        for record in self._tracker.live:
            if record.ever_connected:
                planner.connected(record.name, record.submitted_at, now)
            if record.started_at is not None and record.name in self.workers:
                running.append((record.name, record.started_at))
        presubmit, retire = planner.due(running, now)
        replaced = False
        for name in presubmit:
            # Only jobs the cluster still wants are replaced (not those scaled away), and
            # not while the breaker holds submissions back.
            if name not in self.worker_spec or self._policy.breaker_open:
                continue
            new_name = self._respec(name)
            self._expiring.add(name)
            replaced = True
            logger.info(
                "Job %s reaches its walltime soon: submitted its replacement %s", name, new_name
            )
        if replaced:
            await self._correct_state()
        to_retire = [name for name in retire if name in self.workers]
        for name in to_retire:
            # not replaced yet (breaker open, or the lead was too short): replace it now
            self._respec(name)
            self._expiring.discard(name)
            planner.forget(name)
        if to_retire:
            logger.info("Retiring the workers of %s ahead of the walltime", ", ".join(to_retire))
            await self._stop_jobs(to_retire, "retired ahead of its walltime")
            if any(name not in self.workers for name in self.worker_spec):
                await self._correct_state()

    # ------------------------------------------------------------------ waiting

    async def _wait_for_workers(
        self, n_workers: int = 0, timeout: float | None = None, progress: bool = True
    ) -> None:
        deadline = (
            None if timeout is None else time.monotonic() + parse_timedelta(timeout, "seconds")
        )
        last_line = None
        while True:
            self._raise_if_failed()
            info = await self.scheduler_comm.identity()
            running = sum(
                1 for w in info["workers"].values() if w.get("status", "running") == "running"
            )
            if running >= n_workers:
                return
            line = f"{running}/{n_workers} workers; {self.jobs_summary()}"
            if line != last_line:
                logger.info("%s", line)
                if progress:
                    print(f"[{type(self).__name__}] {line}", file=sys.stderr)
                last_line = line
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(
                    f"Only {running} of {n_workers} workers connected within {timeout}s. "
                    f"{self.jobs_summary()}\n{self.jobs!r}"
                )
            await asyncio.sleep(0.2)

    def wait_for_workers(
        self, n_workers: int, timeout: float | None = None, progress: bool = True
    ) -> None:
        """Wait until ``n_workers`` workers are connected.

        Progress (``2/8 workers; 6 jobs queued (Priority)``) is logged and, with ``progress``,
        printed to stderr. Raises the cause if jobs keep failing or a submission failed, and
        ``TimeoutError`` with the job table after ``timeout`` seconds.
        """
        if not isinstance(n_workers, int) or n_workers < 1:
            raise ValueError(f"n_workers must be a positive integer, got {n_workers!r}")
        return self.sync(self._wait_for_workers, n_workers, timeout=timeout, progress=progress)

    def jobs_summary(self) -> str:
        """One line summarising the live jobs, e.g. ``3 jobs: 1 connected, 2 queued (Priority)``."""
        self._refresh_connected()
        return JobTable(self._tracker.live).summary()

    # ------------------------------------------------------------------ display

    def _repr_html_(self, cluster_status: str | None = None) -> str:
        jobs_html = f"<h4>Jobs</h4>{self.jobs._repr_html_()}"
        return super()._repr_html_(cluster_status=(cluster_status or "") + jobs_html)


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


class _ScalingDone:
    """What ``scale()`` returns in asynchronous mode: awaiting it waits for the submissions
    and raises their error; not awaiting it is fine too (scaling happens anyway)."""

    def __init__(self, cluster: JobQueueCluster):
        self._cluster = cluster

    def __await__(self):
        return self._cluster._correct_state_and_raise().__await__()
