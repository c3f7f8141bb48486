"""The cluster shared by every batch system, on ``distributed.SpecCluster``.

The cluster is the Dask side: it turns ``scale``/``adapt`` into the set of wanted jobs
(``worker_spec``, whole jobs of ``processes`` workers each), builds each job's script, and
starts and retires jobs when that set changes. What happens to a job once wanted (submission
through the engine, state polling, replacement of jobs that die or reach their walltime, the
breaker, cancellation at close or when this process dies) is the supervisor's
(:mod:`dask_jobqueue.supervisor`).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import html
import logging
import math
import sys
import time
import warnings
import weakref
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from dask.utils import parse_timedelta
from distributed.core import Status
from distributed.deploy.adaptive import Adaptive
from distributed.deploy.spec import SpecCluster
from distributed.scheduler import Scheduler
from distributed.security import Security

from ._shell import CommandError
from ._values import parse_duration, parse_memory, parse_positive_int
from .adaptive import PoolAdaptive, WorkerJobKey
from .detached import (
    ClusterRecord,
    DetachedControl,
    RemoteScheduler,
)
from .detached_cluster import DetachedClusterMixin
from .job import PLACEHOLDER_SCHEDULER, Job
from .options import (
    CLUSTER_OPTIONS,
    Option,
    ParametersDocumented,
    check_cluster_arguments,
    resolve_engine_settings,
    resolve_options,
)
from .pools_cluster import PoolOf, PoolsMixin
from .supervisor import LOOP_CHUNK, JobSupervisor
from .tls import prepare_security, remove_files, scheduler_spec
from .tracking import JobState, JobTable

if TYPE_CHECKING:
    from .engine import BatchSystem
    from .lifetime import LifetimePlanner
    from .watchdog import Watchdog

logger = logging.getLogger(__name__)

__all__ = ["JobQueueCluster", "attach"]


class JobQueueCluster(ParametersDocumented, PoolsMixin, DetachedClusterMixin, SpecCluster):
    """A Dask cluster whose workers run in batch jobs.

    Every keyword is resolved as: the keyword, then ``jobqueue.<config_name>.<key>`` in the
    dask config, then the built-in default. Keywords that are not the cluster's own go to the
    job class.
    """

    #: The job class (on an instance: the one it runs, never ``None``).
    job_cls: type[Job] | None = None
    _worker_security: Security | None
    _protocol: str | None

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
        pools: dict[str, dict[str, Any]] | None = None,
        scheduler_in_job: bool | None = None,
        cluster_name: str | None = None,
        keep_alive: str | float | None = None,
        scheduler_cores: int | None = None,
        scheduler_memory: str | None = None,
        scheduler_walltime: str | None = None,
        scheduler_queue: str | None = None,
        record_directory: str | None = None,
        _pool_of: PoolOf | None = None,
        _attach: ClusterRecord | None = None,
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
            "pools": pools,
            "scheduler_in_job": scheduler_in_job,
            "keep_alive": keep_alive,
            "scheduler_cores": scheduler_cores,
            "scheduler_walltime": scheduler_walltime,
            "scheduler_queue": scheduler_queue,
            "record_directory": record_directory,
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
        #: The cluster whose scheduler this pool shares, and the pool's name (else None).
        self._pool_of = _pool_of
        #: Pools added to this cluster, by name (see :meth:`add_pool`).
        self.pools: dict[str, JobQueueCluster] = {}
        self._user_job_kwargs = dict(job_kwargs)
        self._interface = interface
        #: The scheduler-in-a-job side (name, record, lease), or None.
        self._detached: DetachedControl | None = None
        self._detached_settings: dict[str, Any] = {}
        if resolved["scheduler_in_job"] or _attach is not None:
            self._detached = self._detached_control(
                resolved, cluster_name, scheduler_memory, _attach, pools
            )
            self._registry_name()  # a class an attaching process can build, before anything
            if interface is not None:
                self._detached_settings["interface"] = interface
        else:
            for keyword, value in (
                ("cluster_name", cluster_name),
                ("keep_alive", keep_alive),
                ("scheduler_cores", scheduler_cores),
                ("scheduler_memory", scheduler_memory),
                ("scheduler_walltime", scheduler_walltime),
                ("scheduler_queue", scheduler_queue),
                ("record_directory", record_directory),
            ):
                if value is not None:
                    raise ValueError(
                        f"{keyword}={value!r} is for a scheduler outside this process: give "
                        "scheduler_in_job=True too"
                    )
        scheduler: dict[str, Any] | None
        if self._detached is not None:
            security, worker_security, protocol = self._detached_security(
                security, protocol, _attach
            )
            scheduler = {"cls": RemoteScheduler, "options": {"starter": self._start_scheduler}}
        elif _pool_of is None:
            security, worker_security, protocol = prepare_security(
                security, protocol, self.shared_temp_directory, self._tls_files
            )
            scheduler = scheduler_spec(
                scheduler_cls, protocol, security, interface, scheduler_options
            )
        else:
            parent = _pool_of.cluster
            security, worker_security, protocol = (
                parent.security,
                parent._worker_security,
                parent._protocol,
            )
            scheduler = None
        self._worker_security = worker_security
        self._protocol = protocol

        job_kwargs = dict(job_kwargs)
        job_kwargs["config_name"] = config_name
        job_kwargs["interface"] = interface
        job_kwargs["protocol"] = protocol
        job_kwargs["security"] = worker_security
        self._job_kwargs = job_kwargs

        # Validates every option (and emits deprecation warnings) once, before anything runs.
        template = job_cls(PLACEHOLDER_SCHEDULER, name="dummy-name", **job_kwargs)
        self._template_job = template
        #: Dask workers per job: ``processes`` on each of the job's ``nodes``.
        self.processes = template.workers_per_job
        self._job_cores = template.worker_cores
        self._job_memory = template.worker_memory
        group = template.worker_name_suffixes() or None
        worker = {"cls": job_cls, "options": job_kwargs}
        if group:
            worker["group"] = group
        self._group_suffixes = group or []

        settings = resolve_engine_settings(config_name)
        keep_alive_seconds = self._detached.keep_alive if self._detached is not None else None
        if keep_alive_seconds is not None:
            # the jobs stay when this process dies: no watchdog cancels them
            settings = dataclasses.replace(settings, owner_watchdog=False)
        self._settings = settings
        engine = template.batch_system_cls.from_settings(template, settings)
        if _attach is not None:
            engine.cluster_id = _attach.cluster_id  # new jobs carry the cluster's tag
        self._scheduler_job_template: Job | None = None
        if self._detached is not None and _attach is None:
            self._scheduler_job_template = self._scheduler_job(
                scheduler_cores,
                scheduler_memory,
                scheduler_walltime,
                scheduler_queue,
                scheduler_options,
                engine.cluster_id,
            )
        #: Tracking, polling, replacement and clean-up of this cluster's jobs.
        self._supervisor = JobSupervisor(
            self,
            engine,
            settings,
            job_cls.vanish,
            self.processes,
            self._tls_files,
            pool=None if _pool_of is None else _pool_of.name,
        )
        if keep_alive_seconds is not None:
            self._supervisor.keep_jobs_at_exit()

        super().__init__(
            scheduler=scheduler,
            worker=worker,
            loop=loop,
            security=security,
            silence_logs=silence_logs,
            asynchronous=asynchronous,
            name=name,
            shutdown_scheduler=_pool_of is None,
            shutdown_on_close=keep_alive_seconds is None,
        )
        if n_workers:
            self._check_job_cap(math.ceil(n_workers / self.processes), f"n_workers={n_workers}")
            self._scale_to_workers(n_workers)
        if _pool_of is None:  # a pool reads the same section, but has no pools of its own
            try:
                for pool_name, pool_kwargs in (resolved["pools"] or {}).items():
                    self.add_pool(pool_name, **pool_kwargs)
            except Exception:
                if not self.asynchronous:
                    self.close()  # a bad pool: nothing of this cluster stays behind
                raise

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
        """The directive lines (``#SBATCH ...``, ``#PBS ...``) of this cluster's job scripts."""
        return self._dummy_job.job_header

    @property
    def job_name(self) -> str:
        """The batch job name of this cluster's jobs (each also carries the cluster's tag)."""
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
        self._supervisor.start_watchdog()  # before any job can exist
        if self._pool_of is None:
            await super()._start()
        else:
            await self._start_as_pool(self._pool_of.cluster)
        detached = self._detached
        if detached is not None and self.status == Status.running:
            if detached.attached is not None:
                try:
                    await self._adopt_jobs()
                except (CommandError, OSError) as exc:
                    # nothing adopted or cancelled yet: leave the cluster as it was
                    await detached.release()
                    raise RuntimeError(
                        f"Attaching to cluster {detached.name!r}: its jobs could not be "
                        f"listed ({exc}); nothing was changed, attach again"
                    ) from exc
            await detached.sync(self._live_job_table())
            detached.start_heartbeat(self._live_job_table)
        self._supervisor.start()
        for pool in list(self.pools.values()):
            if pool.status == Status.created:
                await pool._start()

    async def _close(self) -> None:
        if self.status == Status.closed:
            return
        for pool in list(self.pools.values()):
            await pool._close()  # before the scheduler they share stops
        await self._supervisor.stop_submitting()
        if self.status == Status.running:
            await self._retire_everything()
        detached = self._detached
        if detached is not None:
            await detached.stop()
            if detached.lost is not None:
                # another process owns the cluster now: its scheduler and jobs are not ours
                self.shutdown_scheduler = False
                self._supervisor.engine.release(self._supervisor.engine.live_ids)
        await super()._close()
        await self._supervisor.close()
        remove_files(self._tls_files)
        if detached is not None:
            detached.remove_directory()
        if self._pool_of is not None:
            self._pool_of.cluster.pools.pop(self._pool_of.name, None)

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
            if addresses and self._detached is not None:
                # a remote scheduler: only this cluster's jobs run there; its workers
                # leave with their jobs, and terminate closes the scheduler next
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
        supervisor = self._supervisor
        async with self._lock:
            self._correct_state_waiting = None
            to_close = [
                name
                for name in self.workers
                if name not in self.worker_spec and name not in supervisor.expiring
            ]
            if to_close:
                await self._stop_jobs(to_close)
            if self.closing:
                return
            now = time.monotonic()
            to_open = [
                name
                for name in self.worker_spec
                if name not in self.workers and supervisor.may_submit(name, now)
            ]
            if to_open:
                await self._start_jobs(to_open)

    async def _start_jobs(self, names: list[str]) -> None:
        address = getattr(self.scheduler, "contact_address", None) or self.scheduler.address
        built = []
        for k, name in enumerate(names):
            if k and k % LOOP_CHUNK == 0:
                await asyncio.sleep(0)  # thousands of jobs: other tasks run in between
            spec = self.worker_spec.get(name)
            if spec is None:
                continue  # scaled away meanwhile
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                job = spec["cls"](address, name=name, **spec.get("options", {}))
            built.append((name, job))
        for name, job in await self._supervisor.start_jobs(built):
            job.status = Status.running
            job._cluster = weakref.ref(self)  # type: ignore[attr-defined]  # as SpecCluster sets it
            self._created.add(job)
            self.workers[name] = job
        if self._detached is not None and built:
            # the scheduler learns the new jobs now: a process attaching after this one
            # dies adopts them (a job submitted in between is cancelled then)
            with contextlib.suppress(OSError, asyncio.TimeoutError):
                await self._detached.sync(self._live_job_table())

    async def _stop_jobs(self, names: list[str], reason: str = "cancelled by the cluster") -> None:
        """Retire the workers of these jobs, then cancel the jobs."""
        # Dropped from ``workers`` first (0.9 drops a job from cluster.workers before cancelling
        # it): once the workers have left the scheduler, cluster.workers no longer lists these
        # jobs.
        jobs = [(name, self.workers.pop(name)) for name in names if name in self.workers]
        await self._supervisor.stop_jobs(jobs, reason)

    # ------------------------------------------------------------------ SupervisedCluster

    @property
    def closing(self) -> bool:
        """True once the cluster is closing or closed."""
        return self.status in (Status.closing, Status.closed)

    def new_job_name(self) -> str:
        """A job name never used before in this cluster."""
        return next(iter(self.new_worker_spec()))

    def connected_workers(self) -> dict[str, int]:
        """Connected Dask workers per job name."""
        counts: dict[str, int] = {}
        key = WorkerJobKey(self._group_suffixes)
        for info in self.scheduler_info.get("workers", {}).values():
            job_name = key.job_name(str(info.get("name")))
            counts[job_name] = counts.get(job_name, 0) + 1
        return counts

    async def retire_job_workers(self, names: Sequence[str], close: bool = False) -> None:
        """Retire the Dask workers of these jobs (their data moves to other workers);
        ``close``: the workers exit too (else the job's cancellation ends them)."""
        if self.scheduler.status != Status.running:
            return
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
                await self.scheduler_comm.retire_workers(workers=addresses, close_workers=close)

    async def correct_state(self) -> None:
        """Submit wanted jobs that do not run, cancel running ones that are not wanted."""
        await self._correct_state()

    def correct_state_later(self, delay: float) -> None:
        """Call :meth:`correct_state` after ``delay`` seconds."""
        # Cluster.loop is typed IOLoop | None but never returns None (see _scale_to_jobs)
        self.loop.call_later(delay, self._correct_state)  # type: ignore[union-attr]

    # ------------------------------------------------------------------ scaling

    def _raise_if_failed(self) -> None:
        self._supervisor.raise_if_failed()

    def _take_pending_error(self) -> BaseException | None:
        """Return the pending error and re-arm submission: the user asked again."""
        return self._supervisor.take_pending_error()

    @property
    def _pending_error(self) -> BaseException | None:
        return self._supervisor.pending_error

    @property
    def _engine(self) -> BatchSystem:
        return self._supervisor.engine

    @property
    def _watchdog(self) -> Watchdog | None:
        return self._supervisor.watchdog

    @property
    def _lifetime(self) -> LifetimePlanner | None:
        return self._supervisor.lifetime

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
            surplus = len(self.worker_spec) - target
            for name in self._supervisor.drop_order(list(self.worker_spec))[:surplus]:
                del self.worker_spec[name]
                self._supervisor.unwanted(name)
        if target == 0:
            self._supervisor.nothing_wanted()
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
        ``ValueError`` s. With pools, each pool that has no ``adapt`` of its own adapts within
        the same limits, and grows only for the tasks its workers can run (see
        :meth:`add_pool`)."""
        pool_limits = {
            **kwargs,
            "minimum_jobs": minimum_jobs,
            "maximum_jobs": maximum_jobs,
            "idle_timeout": idle_timeout,
        }
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
        kwargs.setdefault("Adaptive", PoolAdaptive)
        previous_error = self._take_pending_error()
        adaptive = super().adapt(*args, **kwargs)
        for pool in self.pools.values():
            if pool._adaptive is None:  # a pool without limits of its own gets the cluster's
                pool.adapt(*args, **pool_limits)
        if previous_error is not None:
            raise previous_error
        return adaptive

    # ------------------------------------------------------------------ job states

    @property
    def jobs(self) -> JobTable:
        """Every job this cluster submitted and still tracks, plus recently ended ones; with
        pools, theirs too (the ``pool`` column says whose)."""
        self._refresh_connected()
        tracker = self._supervisor.tracker
        records = [*tracker.ended, *tracker.live]
        for pool in self.pools.values():
            records += pool.jobs
        # scheduler_in_job: a line about the scheduler's own job, and when its walltime ends
        return JobTable(records, note=self._scheduler_note())

    def _refresh_connected(self) -> bool:
        return self._supervisor.poller.refresh_connected()

    @property
    def status_calls(self) -> int:
        """How many status commands the engine has run (a poll may run several)."""
        return self._supervisor.engine.commands["status"]

    @property
    def polls(self) -> int:
        """How many polls asked the batch system about the live jobs."""
        return self._supervisor.poller.polls

    @property
    def failed_polls(self) -> int:
        """How many polls failed (their status commands failed or timed out): job states
        are left unchanged by a failed poll."""
        return self._supervisor.poller.failed_polls

    @property
    def command_counts(self) -> dict[str, int]:
        """Batch-system commands run so far, by kind (``submit``, ``status``, ``cancel``)."""
        return dict(self._supervisor.engine.commands)

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
            # a pool counts its own workers; the cluster counts every worker of its scheduler
            prefix = f"{self._name}-" if self._pool_of is not None else ""
            running = sum(
                1
                for w in info["workers"].values()
                if w.get("status", "running") == "running"
                and str(w.get("name", "")).startswith(prefix)
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
                # the jobs without connected workers say why; at most 20 rows (not 50,000)
                waiting = JobTable(r for r in self.jobs if r.state != JobState.CONNECTED)
                raise TimeoutError(
                    f"Only {running} of {n_workers} workers connected within {timeout}s. "
                    f"{self.jobs_summary()}\n{waiting.head(20)}"
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
        live = list(self._supervisor.tracker.live)
        for pool in self.pools.values():
            pool._refresh_connected()
            live += pool._supervisor.tracker.live
        return JobTable(live).summary()

    # ------------------------------------------------------------------ display

    def _repr_html_(self, cluster_status: str | None = None) -> str:
        jobs_html = f"<h4>Jobs</h4>{self.jobs._repr_html_()}"
        if self._detached is not None:
            name = html.escape(self._detached.name)
            jobs_html = f"<p>Cluster name: <code>{name}</code> (attach with it)</p>{jobs_html}"
        return super()._repr_html_(cluster_status=(cluster_status or "") + jobs_html)


class _ScalingDone:
    """What ``scale()`` returns in asynchronous mode: awaiting it waits for the submissions
    and raises their error; not awaiting it is fine too (scaling happens anyway)."""

    def __init__(self, cluster: JobQueueCluster):
        self._cluster = cluster

    def __await__(self):
        return self._cluster._correct_state_and_raise().__await__()


def attach(
    name: str, record_directory: str | None = None, asynchronous: bool = False, loop: Any = None
) -> JobQueueCluster:
    """The cluster ``name`` started with ``scheduler_in_job=True``, whatever its class: see
    :meth:`JobQueueCluster.attach`."""
    return JobQueueCluster.attach(
        name, record_directory=record_directory, asynchronous=asynchronous, loop=loop
    )
