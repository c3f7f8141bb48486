"""The pools half of :class:`~dask_jobqueue.cluster.JobQueueCluster`.

A pool is a cluster of its own kind of job (its jobs, ``scale``, ``adapt``, ``jobs``) whose
workers join another cluster's Dask scheduler: :meth:`PoolsMixin.add_pool` builds it, and the
adaptive policy (:mod:`dask_jobqueue.adaptive`) asks :meth:`~PoolsMixin.pool_family`,
:meth:`~PoolsMixin.member_of_worker` and :meth:`~PoolsMixin.pool_shape` where demand should
go (the placement itself is pure: :mod:`dask_jobqueue.pools`).
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

from distributed.core import Status, rpc

from .adaptive import WorkerJobKey
from .pools import PoolShape, worker_resources

if TYPE_CHECKING:
    from distributed.security import Security

    from .cluster import JobQueueCluster
    from .job import Job

__all__ = ["SHARED_WITH_POOLS", "PoolOf", "PoolsMixin"]


@dataclass(frozen=True)
class PoolOf:
    """What makes a cluster a pool: the cluster whose scheduler it shares, and its name."""

    cluster: JobQueueCluster
    name: str


#: A pool's name: it becomes part of its job and worker names (and of batch job names).
POOL_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,31}")

#: Cluster keywords a pool cannot have: it shares its cluster's scheduler (and its loop).
SHARED_WITH_POOLS = (
    "security",
    "scheduler_options",
    "scheduler_cls",
    "protocol",
    "shared_temp_directory",
    "dashboard_address",
    "host",
    "loop",
    "asynchronous",
    "silence_logs",
    "name",
    "pools",
    "scheduler_in_job",
    "cluster_name",
    "keep_alive",
    "scheduler_cores",
    "scheduler_memory",
    "scheduler_walltime",
    "scheduler_queue",
    "record_directory",
)


class PoolsMixin:
    """Adding pools to a cluster, and finding a worker's pool (a part of
    :class:`~dask_jobqueue.cluster.JobQueueCluster`, not used on its own)."""

    # set by JobQueueCluster.__init__ (and SpecCluster's)
    job_cls: type[Job] | None
    pools: dict[str, JobQueueCluster]
    _pool_of: PoolOf | None
    _name: str
    _interface: str | None
    _user_job_kwargs: dict[str, Any]
    _template_job: Job
    _group_suffixes: Any
    _lock: asyncio.Lock
    config_name: str
    name: str
    status: Status
    asynchronous: bool
    security: Security
    scheduler: Any
    scheduler_comm: Any
    scheduler_info: dict
    workers: dict[str, Any]
    worker_spec: dict[str, Any]

    def add_pool(
        self, name: str, cluster_cls: type[JobQueueCluster] | None = None, **job_kwargs: Any
    ) -> JobQueueCluster:
        """Add a pool: another kind of job whose workers join this cluster's scheduler.

        A pool is a cluster of its own (its own jobs, ``scale``, ``adapt``, ``jobs``) that
        shares this cluster's Dask scheduler, security and event loop. Its keywords override
        this cluster's job keywords (e.g. ``queue="gpu"``); with ``cluster_cls`` of another
        batch system it inherits none of them. Closing the cluster closes its pools first.

        Parameters
        ----------
        name : str
            The pool's name: a letter, then letters, digits or ``_`` (at most 32). It becomes
            part of the pool's job names (``<cluster>-<name>-<n>``) and, unless ``job_name``
            is given, of its batch job names.
        cluster_cls : type, optional
            The pool's cluster class; default: this cluster's.
        **job_kwargs
            Job keywords of the pool (and ``n_workers``, ``interface``, ``config_name``).

        Returns
        -------
        JobQueueCluster
            The pool, also in ``cluster.pools[name]``.
        """
        if self._pool_of is not None:
            raise ValueError(
                f"add_pool({name!r}): {self._pool_of.name!r} is a pool; add pools to its "
                "cluster instead"
            )
        if not isinstance(name, str) or not POOL_NAME.fullmatch(name):
            raise ValueError(
                f"add_pool(name={name!r}): a pool's name is a letter, then letters, digits "
                "or '_' (at most 32 characters)"
            )
        if name in self.pools:
            raise ValueError(f"add_pool({name!r}): this cluster has a pool named {name!r} already")
        if self.status in (Status.closing, Status.closed):
            raise ValueError(f"add_pool({name!r}): the cluster is {self.status.name}")
        cls = type(self) if cluster_cls is None else cluster_cls
        if not (isinstance(cls, type) and issubclass(cls, PoolsMixin)):
            raise ValueError(
                f"add_pool({name!r}, cluster_cls={cluster_cls!r}): cluster_cls must be a "
                "JobQueueCluster subclass, e.g. SLURMCluster"
            )
        shared = sorted(k for k in job_kwargs if k in SHARED_WITH_POOLS)
        if shared:
            raise ValueError(
                f"add_pool({name!r}, {shared[0]}=...): a pool shares its cluster's scheduler; "
                f"{', '.join(shared)} can only be given to the cluster"
            )
        cluster = cast("JobQueueCluster", self)
        pool_cls = cast("type[JobQueueCluster]", cls)
        same_kind = pool_cls.job_cls is self.job_cls
        kwargs = {**self._user_job_kwargs, **job_kwargs} if same_kind else dict(job_kwargs)
        kwargs.setdefault("interface", self._interface)
        if same_kind:
            kwargs.setdefault("config_name", self.config_name)
            kwargs.setdefault("job_name", f"{cluster.job_name}-{name}")
        pool = pool_cls(
            loop=cluster.loop,
            asynchronous=self.asynchronous,
            silence_logs=False,
            name=f"{self._name}-{name}",
            _pool_of=PoolOf(cluster, name),
            **kwargs,
        )
        self.pools[name] = pool
        return pool

    def pool_family(self) -> list[JobQueueCluster]:
        """The cluster and its pools (from the cluster or from any of its pools), the
        cluster first."""
        root = self._pool_of.cluster if self._pool_of is not None else cast("JobQueueCluster", self)
        return [root, *root.pools.values()]

    def member_of_worker(self, worker_name: str) -> JobQueueCluster | None:
        """The cluster or pool whose job runs the worker of this name (``None``: no job of
        this family)."""
        for member in self.pool_family():
            job = WorkerJobKey(member._group_suffixes).job_name(worker_name)
            if job in member.workers or job in member.worker_spec:
                return member
        return None

    def pool_shape(self) -> PoolShape:
        """What this cluster's (or pool's) workers offer, for placing demand among pools."""
        template = self._template_job
        # read from the worker command itself: a GPU job's workers add GPU=1 there
        resources = worker_resources(template.worker_command_tokens(one_process=True))
        return PoolShape(self.name, resources, template.worker_process_threads)

    async def _start_as_pool(self, parent: JobQueueCluster) -> None:
        """Start on the running scheduler of ``parent``.

        Not ``SpecCluster._start``: a scheduler sends worker events to one subscriber (its
        ``worker-status`` plugin); a second subscription would take the cluster's. The pool
        reads the cluster's ``scheduler_info`` instead, kept current by that subscription,
        and leaves the scheduler's cluster metadata to the cluster.
        """
        if self.status == Status.running:
            return
        if parent.scheduler is None or parent.status != Status.running:
            raise RuntimeError(
                f"Pool {self.name!r}: its cluster is {parent.status.name}; start the cluster "
                "before its pools"
            )
        self._lock = asyncio.Lock()
        self.scheduler = parent.scheduler
        self.scheduler_comm = rpc(
            getattr(self.scheduler, "external_address", None) or self.scheduler.address,
            connection_args=self.security.get_connection_args("client"),
        )
        self.scheduler_info = parent.scheduler_info
        self.status = Status.running
