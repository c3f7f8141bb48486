"""The cluster shared by every batch system, on ``distributed.SpecCluster``.

It starts and retires whole jobs, submits them a few at a time, cancels them in one command,
polls their states with one status command per interval, explains and replaces jobs that die,
stops resubmitting after repeated failures (circuit breaker), and cancels everything at close
or interpreter exit.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import math
import os
import sys
import tempfile
import time
import warnings
import weakref
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import dask
import dask.config
from dask.utils import parse_timedelta
from distributed.core import Status
from distributed.deploy.adaptive import Adaptive
from distributed.deploy.spec import ProcessInterface, SpecCluster
from distributed.scheduler import Scheduler
from distributed.security import Security

from ._shell import CommandError
from ._values import check_name, parse_memory, parse_positive_int
from .job import PLACEHOLDER_SCHEDULER, Job, JobFailedError
from .tracking import JobRecord, JobState, JobStatus, JobTable

logger = logging.getLogger(__name__)

__all__ = ["JobQueueCluster"]

_MISSING_POLLS_BEFORE_LOST = 3
_STDERR_TAIL_LINES = 20


def _accepted_keywords(job_cls: type[Job]) -> set[str]:
    names: set[str] = set()
    for klass in job_cls.__mro__:
        init = klass.__dict__.get("__init__")
        if init is None or klass is ProcessInterface or klass is object:
            continue
        for param in inspect.signature(init).parameters.values():
            if param.kind in (param.POSITIONAL_OR_KEYWORD, param.KEYWORD_ONLY):
                names.add(param.name)
    names.discard("self")
    return names


class _WorkerJobKey:
    """Adaptive ``worker_key``: the spec (job) name of a worker, so jobs retire whole."""

    def __init__(self, suffixes: Sequence[str]):
        self.suffixes = tuple(suffixes)

    def __call__(self, ws: Any) -> str:
        return self.job_name(str(ws.name))

    def job_name(self, worker_name: str) -> str:
        for suffix in self.suffixes:
            if worker_name.endswith(suffix):
                return worker_name[: -len(suffix)]
        return worker_name


class _JobQueueAdaptive(Adaptive):
    """Adaptive scaling in whole jobs.

    distributed's Adaptive counts workers; with several workers per job it would retire one
    worker of a job, which cancels the whole job, which it then starts again (upstream #498).
    Here targets are rounded up to whole jobs and only whole jobs are retired.
    """

    async def recommendations(self, target: int) -> dict:
        cluster = self.cluster
        if len(self.plan) != len(self.requested):
            await cluster
        key = _WorkerJobKey(cluster._group_suffixes)
        target_jobs = math.ceil(target / cluster.processes)
        planned = list(cluster.worker_spec)
        if target_jobs >= len(planned):
            self.close_counts.clear()
            if target_jobs == len(planned):
                return {"status": "same"}
            return {"status": "up", "n": target_jobs * cluster.processes}
        excess = len(planned) - target_jobs
        arrived = {key.job_name(str(name)) for name in self.observed}
        to_close = [name for name in reversed(planned) if name not in arrived][:excess]
        if len(to_close) < excess:
            for worker in await self.workers_to_close(target=target_jobs * cluster.processes):
                job = key.job_name(str(worker))
                if job in cluster.worker_spec and job not in to_close and len(to_close) < excess:
                    to_close.append(job)
        firmly_close = []
        for job in to_close:
            self.close_counts[job] += 1
            if self.close_counts[job] >= self.wait_count:
                firmly_close.append(job)
        for job in list(self.close_counts):
            if job in firmly_close or job not in to_close:
                del self.close_counts[job]
        if not firmly_close:
            return {"status": "same"}
        suffixes = cluster._group_suffixes or [""]
        return {"status": "down", "workers": [f"{job}{s}" for job in firmly_close for s in suffixes]}

    async def scale_up(self, n: int) -> None:
        self.cluster._scale_to_workers(int(n))
        await self.cluster._correct_state()


class JobQueueCluster(SpecCluster):
    """A Dask cluster whose workers run in batch jobs.

    Parameters not listed here are job parameters (``cores``, ``memory``, ``processes``,
    ``queue``, ``walltime``...), resolved as keyword, then ``jobqueue.<config_name>.<key>``
    in the dask config, then the built-in default.

    Parameters
    ----------
    n_workers : int
        Workers (not jobs) to start right away.
    job_cls : type
        The :class:`Job` subclass; needed only when using ``JobQueueCluster`` directly.
    security : Security or bool
        ``True`` creates temporary TLS credentials, written privately to
        ``shared_temp_directory`` so the workers can read them.
    scheduler_options : dict
        Keyword arguments for the scheduler (``dashboard_address``, ``port``, ``host``...).
    config_name : str
        Section of ``jobqueue.yaml`` to read, e.g. a named profile ``my-gpu``.
    """

    job_cls: ClassVar[type[Job] | None] = None

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
        job_cls = job_cls or type(self).job_cls
        if job_cls is None:
            raise ValueError(
                "You need to specify a Job type. Two cases:\n"
                "- you are inheriting from JobQueueCluster (most likely): set the `job_cls` "
                "class attribute, e.g. job_cls = SLURMJob\n"
                "- you are using JobQueueCluster directly: pass job_cls=..., e.g. "
                "JobQueueCluster(job_cls=SLURMJob, cores=8, memory='24GB')"
            )
        self.job_cls = job_cls
        if dashboard_address is not None:
            raise ValueError(
                "Please pass 'dashboard_address' through 'scheduler_options': use\n"
                f'cluster = {type(self).__name__}(..., scheduler_options={{"dashboard_address": "{dashboard_address}"}})'
            )
        if host is not None:
            raise ValueError(
                "Please pass 'host' through 'scheduler_options': use\n"
                f'cluster = {type(self).__name__}(..., scheduler_options={{"host": "{host}"}})'
            )
        n_workers = parse_positive_int(n_workers, "n_workers", allow_zero=True)
        config_name = config_name or job_cls.config_name
        if config_name is None:
            raise ValueError(
                f"{job_cls.__name__} has no config_name: pass config_name= to the cluster"
            )
        self.config_name = config_name
        if dask.config.get(f"jobqueue.{config_name}", default=None) is None:
            raise ValueError(
                f"config_name={config_name!r}: there is no section 'jobqueue.{config_name}' "
                "in the dask configuration (jobqueue.yaml)"
            )

        def conf(key: str, value: Any) -> Any:
            if value is not None:
                return value
            return dask.config.get(f"jobqueue.{config_name}.{key}", default=None)

        if name is not None:
            check_name(name, "name")
        interface = conf("interface", interface)
        if security is True:
            try:
                security = Security.temporary()
            except ImportError:
                raise ImportError(
                    "security=True needs the 'cryptography' package: pip install cryptography"
                ) from None
        elif security is False:
            security = None
        if protocol is None and security is not None:
            protocol = "tls://"
        self._tls_files: list[str] = []
        if security is not None:
            worker_security = self._write_tls_files(
                security, conf("shared-temp-directory", shared_temp_directory)
            )
        else:
            worker_security = None

        default_scheduler_options = {
            "protocol": protocol,
            "dashboard_address": ":8787",
            "security": security,
        }
        scheduler_options = conf("scheduler-options", scheduler_options) or {}
        if interface and "host" not in scheduler_options and "interface" not in scheduler_options:
            default_scheduler_options["interface"] = interface
        scheduler = {
            "cls": scheduler_cls,
            "options": {**default_scheduler_options, **scheduler_options},
        }

        unknown = set(job_kwargs) - _accepted_keywords(job_cls)
        if unknown:
            raise ValueError(
                f"{type(self).__name__} got unexpected keyword(s) {sorted(unknown)}. "
                f"Accepted job keywords: {sorted(_accepted_keywords(job_cls) - {'scheduler', 'name'})}"
            )
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

        def seconds(key: str) -> float:
            return parse_timedelta(conf(key, None), "seconds")

        self._poll_interval = seconds("poll-interval") or 2.0
        self._poll_interval_max = max(seconds("poll-interval-max") or 30.0, self._poll_interval)
        self._status_timeout = seconds("status-timeout") or 30.0
        self._submit_timeout = seconds("submit-timeout") or 120.0
        self._resubmit_backoff = seconds("resubmit-backoff") or 2.0
        self._max_failures = parse_positive_int(
            conf("max-consecutive-failures", None) or 3, "max-consecutive-failures"
        )
        self._submit_concurrency = parse_positive_int(
            conf("submit-concurrency", None) or 8, "submit-concurrency"
        )

        self._records: dict[str, JobRecord] = {}  # job id -> record, submission order
        self._ended: list[JobRecord] = []
        self._active_job_ids: set[str] = set()
        self._pending_error: BaseException | None = None
        self._breaker_open = False
        self._consecutive_failures = 0
        self._resubmit_not_before: dict[str, float] = {}
        self._poll_task: asyncio.Task | None = None
        self._poll_wakeup: asyncio.Event | None = None
        self._status_calls = 0
        self._status_errors = 0
        self._missing_polls: dict[str, int] = {}
        self._exit_finalizer = weakref.finalize(
            self, template.cancel_jobs_sync, self._active_job_ids
        )

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
            self._scale_to_workers(n_workers)

    # ------------------------------------------------------------------ TLS

    def _write_tls_files(self, security: Security, directory: str | None) -> Security:
        """Write in-memory worker credentials to private files workers can read."""
        tls = security.get_tls_config_for_role("worker")
        if not any(v and "\n" in str(v) for v in tls.values()):
            return security
        if directory is None:
            warnings.warn(
                "Using a temporary security object without shared_temp_directory: the TLS "
                "credentials are written to the current working directory, which must be "
                "visible from the workers.",
                UserWarning,
                stacklevel=3,
            )
            directory = os.getcwd()
        directory = os.path.expanduser(os.path.expandvars(directory))
        files = {}
        for key in ("ca_file", "cert", "key"):
            value = tls.get(key)
            if value and "\n" in value:
                fd, path = tempfile.mkstemp(prefix=f".dask-jobqueue.worker.{key}.", dir=directory)
                with os.fdopen(fd, "w") as f:
                    f.write(value)
                os.chmod(path, 0o600)
                self._tls_files.append(path)
                files[key] = path
        worker_security = Security(
            require_encryption=security.require_encryption,
            tls_ca_file=files.get("ca_file", tls.get("ca_file")),
            tls_worker_cert=files.get("cert", tls.get("cert")),
            tls_worker_key=files.get("key", tls.get("key")),
        )
        return worker_security

    def _remove_tls_files(self) -> None:
        for path in self._tls_files:
            with contextlib.suppress(OSError):
                os.remove(path)
        self._tls_files = []

    # ------------------------------------------------------------------ scripts & names

    @property
    def _dummy_job(self) -> Job:
        """A job of this cluster named ``dummy-name``, built fresh (upstream kept this name)."""
        address = PLACEHOLDER_SCHEDULER
        if self.scheduler is not None and getattr(self.scheduler, "address", None):
            address = getattr(self.scheduler, "contact_address", None) or self.scheduler.address
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return self.job_cls(address, name="dummy-name", **self._job_kwargs)

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

    # ------------------------------------------------------------------ lifecycle

    async def _start(self) -> None:
        await super()._start()
        if self._poll_task is None:
            self._poll_wakeup = asyncio.Event()
            self._poll_task = asyncio.ensure_future(self._poll_forever())

    async def _close(self) -> None:
        if self.status == Status.closed:
            return
        await super()._close()
        if self._poll_task is not None:
            self._poll_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._poll_task
            self._poll_task = None
        # Jobs that died or were replaced are already gone; anything left is cancelled here.
        if self._active_job_ids:
            await self._template_job.cancel_jobs(sorted(self._active_job_ids), self._status_timeout)
            self._active_job_ids.clear()
        self._remove_tls_files()

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
            to_close = [name for name in self.workers if name not in self.worker_spec]
            if to_close:
                await self._stop_jobs(to_close)
            if self._breaker_open or self.status in (Status.closing, Status.closed):
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
        jobs = []
        for name in names:
            spec = self.worker_spec[name]
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                job = spec["cls"](address, name=name, **spec.get("options", {}))
            jobs.append(job)
        # A few submit commands at a time: hundreds at once overload login nodes and
        # controllers (and some sites rate-limit them), a handful keeps the pipe full.
        limit = asyncio.Semaphore(self._submit_concurrency)

        async def submit(job: Job) -> str:
            async with limit:
                return await job.submit(self._submit_timeout)

        results = await asyncio.gather(*(submit(job) for job in jobs), return_exceptions=True)
        errors = []
        for name, job, result in zip(names, jobs, results, strict=True):
            if isinstance(result, BaseException):
                if isinstance(result, asyncio.CancelledError):
                    raise result
                job.mark_closed()
                errors.append(result)
                continue
            job.status = Status.running
            job._cluster = weakref.ref(self)
            self._created.add(job)
            self.workers[name] = job
            self._resubmit_not_before.pop(name, None)
            self._active_job_ids.add(job.job_id)
            self._records[job.job_id] = JobRecord(
                name=name, job_id=job.job_id, workers_expected=self.processes
            )
        if errors:
            # A submit error is a configuration problem or a broken batch system: say it
            # once, and do not retry until the user asks again (scale/adapt).
            error = errors[0]
            logger.error("Submitting %d job(s) failed: %s", len(errors), error)
            self._pending_error = error
            self._breaker_open = True
        if self._poll_wakeup is not None:
            self._poll_wakeup.set()

    async def _stop_jobs(self, names: list[str]) -> None:
        """Retire the workers of these jobs, then cancel the jobs in one command."""
        # Out of self.workers first, before retiring their workers and cancelling (0.9 drops a
        # job from cluster.workers before cancelling it): once the workers have left the
        # scheduler, cluster.workers no longer lists these jobs.
        jobs = [self.workers.pop(name) for name in names if name in self.workers]
        if self.scheduler.status == Status.running:
            worker_names = set()
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
        ids = [job.job_id for job in jobs if job.job_id and job.job_id in self._active_job_ids]
        for job in jobs:
            # Forget first, so the poller does not mistake the cancellation for a death.
            self._forget_job(job, JobState.CANCELLED, "cancelled by the cluster")
        if ids:
            await jobs[0].cancel_jobs(ids, self._status_timeout)
        for job in jobs:
            job.mark_closed()

    def _forget_job(self, job: Job, state: JobState, reason: str) -> None:
        if job.job_id is None:
            return
        self._active_job_ids.discard(job.job_id)
        self._missing_polls.pop(job.job_id, None)
        record = self._records.pop(job.job_id, None)
        if record is not None:
            if not record.state.is_final:
                record.apply(JobStatus(state, reason))
            self._ended.append(record)
            del self._ended[:-50]

    # ------------------------------------------------------------------ scaling

    def _raise_if_failed(self) -> None:
        if self._pending_error is not None:
            raise self._pending_error

    def _take_pending_error(self) -> BaseException | None:
        """Return the pending error and re-arm submission: the user asked again."""
        error, self._pending_error = self._pending_error, None
        self._breaker_open = False
        self._consecutive_failures = 0
        return error

    def _scale_to_workers(self, n: int) -> None:
        self._scale_to_jobs(math.ceil(n / self.processes))

    def _scale_to_jobs(self, target: int) -> None:
        if len(self.worker_spec) > target:
            # Drop jobs whose workers are not connected first (queued, then newest).
            def keep_priority(name: str) -> tuple[int, int]:
                job = self.workers.get(name)
                record = self._records.get(job.job_id) if job and job.job_id else None
                connected = 1 if record is not None and record.workers_connected else 0
                return (connected, -list(self.worker_spec).index(name))

            for name in sorted(self.worker_spec, key=keep_priority)[
                : len(self.worker_spec) - target
            ]:
                del self.worker_spec[name]
                self._resubmit_not_before.pop(name, None)
        if self.status not in (Status.closing, Status.closed):
            while len(self.worker_spec) < target:
                self.worker_spec.update(self.new_worker_spec())
        self.loop.add_callback(self._correct_state)

    def scale(
        self,
        n: int | None = None,
        jobs: int = 0,
        memory: str | None = None,
        cores: int | None = None,
    ):
        """Scale the cluster to ``n`` workers, or ``jobs`` jobs, or enough jobs for
        ``cores``/``memory`` in total (the largest of these wins).

        Jobs always hold ``processes`` workers, so worker counts are rounded up to whole jobs.
        An error left by a previous submission (e.g. a rejected ``sbatch``) is raised here, and
        the next call tries again.
        """
        target = parse_positive_int(jobs, "jobs", allow_zero=True)
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
        previous_error = self._take_pending_error()
        self._scale_to_jobs(target)
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
        return self._template_job.worker_process_memory

    def adapt(
        self,
        *args: Any,
        minimum_jobs: int | None = None,
        maximum_jobs: int | None = None,
        **kwargs: Any,
    ) -> Adaptive:
        """Scale adaptively between limits given in workers (``minimum``/``maximum``) or
        jobs (``minimum_jobs``/``maximum_jobs``); whole jobs are started and retired."""
        if minimum_jobs is not None:
            kwargs["minimum"] = (
                parse_positive_int(minimum_jobs, "minimum_jobs", allow_zero=True) * self.processes
            )
        if maximum_jobs is not None:
            kwargs["maximum"] = (
                parse_positive_int(maximum_jobs, "maximum_jobs", allow_zero=True) * self.processes
            )
        if self._group_suffixes:
            kwargs.setdefault("worker_key", _WorkerJobKey(self._group_suffixes))
        kwargs.setdefault("Adaptive", _JobQueueAdaptive)
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
        return JobTable([*self._ended, *self._records.values()])

    def _refresh_connected(self) -> bool:
        """Update each live job's connected-worker count from the scheduler; True if any
        job's state changed."""
        counts = self._connected_counts()
        changed = False
        for job in list(self.workers.values()):
            record = self._records.get(job.job_id) if job.job_id else None
            if record is not None and not record.state.is_final:
                changed |= record.set_connected_workers(counts.get(job.name, 0))
                if record.workers_connected:
                    self._consecutive_failures = 0
        return changed

    @property
    def status_calls(self) -> int:
        """How many status commands the poller has run (one per poll, for all jobs)."""
        return self._status_calls

    def _connected_counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        key = _WorkerJobKey(self._group_suffixes)
        for info in self.scheduler_info.get("workers", {}).values():
            job_name = key.job_name(str(info.get("name")))
            counts[job_name] = counts.get(job_name, 0) + 1
        return counts

    async def _poll_forever(self) -> None:
        interval = self._poll_interval
        assert self._poll_wakeup is not None
        while self.status not in (Status.closing, Status.closed):
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._poll_wakeup.wait(), timeout=interval)
                # A submission just happened: give the batch system a moment, then poll fast.
                interval = self._poll_interval
            self._poll_wakeup.clear()
            try:
                changed = await self._poll_once()
            except asyncio.CancelledError:
                raise
            except Exception:  # the poller must survive anything a parser or command does
                logger.exception("Job status poll failed")
                changed = False
            if changed or any(
                r.state.is_waiting and r.reason == "submitted" for r in self._records.values()
            ):
                interval = self._poll_interval
            else:
                interval = min(interval * 2, self._poll_interval_max)

    async def _poll_once(self) -> bool:
        """One status query for every live job; returns True if any job changed state."""
        changed = self._refresh_connected()
        live = {
            job.job_id: job
            for job in list(self.workers.values())
            if job.job_id is not None and job.job_id in self._records
        }
        if not live:
            return changed
        self._status_calls += 1
        try:
            statuses = await self._template_job.query_status(
                sorted(live), live, self._status_timeout
            )
        except CommandError as exc:
            self._status_errors += 1
            level = (
                logging.WARNING
                if self._status_errors in (1, 10) or self._status_errors % 100 == 0
                else logging.DEBUG
            )
            logger.log(
                level,
                "Job status query failed (%d so far); job states unchanged: %s",
                self._status_errors,
                exc,
            )
            return changed
        if statuses is None:
            return changed
        for job_id, job in live.items():
            record = self._records.get(job_id)
            if record is None:
                continue
            status = statuses.get(job_id)
            if status is None:
                missing = self._missing_polls.get(job_id, 0) + 1
                self._missing_polls[job_id] = missing
                if missing < _MISSING_POLLS_BEFORE_LOST:
                    continue
                status = JobStatus(JobState.LOST, "no longer known to the batch system")
            else:
                self._missing_polls.pop(job_id, None)
            if status.state == JobState.RUNNING and record.workers_connected:
                status = JobStatus(JobState.CONNECTED, None, status.exit_code, status.native_state)
            if record.apply(status):
                changed = True
                logger.debug(
                    "Job %s (%s) is now %s %s", job_id, job.name, record.state, record.reason or ""
                )
            if record.state.is_final:
                self._job_ended(job, record)
        return changed

    def _job_ended(self, job: Job, record: JobRecord) -> None:
        """A job reached a final state on its own: replace it if the cluster still wants it."""
        wanted = job.name in self.worker_spec and self.workers.get(job.name) is job
        if not record.ever_connected or record.state in (JobState.FAILED, JobState.LOST):
            record.error = self._explain_death(job, record)
        self._forget_job(job, record.state, record.reason or "")
        job.mark_closed()
        if self.workers.get(job.name) is job:
            del self.workers[job.name]
        if not wanted or self.status in (Status.closing, Status.closed):
            return
        died_early = not record.ever_connected
        if died_early:
            self._consecutive_failures += 1
            logger.warning("%s", record.error)
            if self._consecutive_failures >= self._max_failures:
                self._breaker_open = True
                self._pending_error = JobFailedError(
                    f"{self._consecutive_failures} jobs in a row ended before their workers "
                    f"connected; not resubmitting until scale() or adapt() is called again.\n"
                    f"Last failure: {record.error}",
                    [r for r in self._ended if r.error][-self._max_failures :],
                )
                logger.error("%s", self._pending_error)
                return
            delay = min(self._resubmit_backoff * 2 ** (self._consecutive_failures - 1), 60.0)
        else:
            delay = 0.0
            logger.info(
                "Job %s (%s) %s; submitting a replacement", record.job_id, job.name, record.state
            )
        self._resubmit_not_before[job.name] = time.monotonic() + delay
        self.loop.call_later(delay + 0.01, self._correct_state)

    def _explain_death(self, job: Job, record: JobRecord) -> str:
        what = f"Job {record.job_id} ({job.name}) {record.state.value}"
        if record.exit_code is not None:
            what += f" with exit code {record.exit_code}"
        if not record.ever_connected:
            what += " before its workers connected"
        if record.reason:
            what += f" ({record.reason})"
        paths = job.output_files(record.job_id)
        for path in paths:
            tail = _tail(path, _STDERR_TAIL_LINES)
            if tail:
                return f"{what}. Last lines of {path}:\n{tail}"
        if paths:
            return f"{what}. No output found in {', '.join(str(p) for p in paths)}"
        return f"{what}. Set log_directory= to keep the jobs' output files."

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
        return JobTable(self._records.values()).summary()

    # ------------------------------------------------------------------ display

    def _repr_html_(self, cluster_status: str | None = None) -> str:
        jobs_html = f"<h4>Jobs</h4>{self.jobs._repr_html_()}"
        return super()._repr_html_(cluster_status=(cluster_status or "") + jobs_html)


class _ScalingDone:
    """What ``scale()`` returns in asynchronous mode: awaiting it waits for the submissions
    and raises their error; not awaiting it is fine too (scaling happens anyway)."""

    def __init__(self, cluster: JobQueueCluster):
        self._cluster = cluster

    def __await__(self):
        return self._cluster._correct_state_and_raise().__await__()


def _tail(path: Path | str, lines: int) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - 16384))
            data = f.read().decode(errors="replace")
    except OSError:
        return ""
    return "\n".join(data.strip().splitlines()[-lines:])
