"""Adaptive scaling in whole jobs (``cluster.adapt()``), for batch queues.

distributed's ``Adaptive`` supplies the loop and the demand (the scheduler's
``adaptive_target``, in workers); :class:`~dask_jobqueue.scaling_policy.JobScalingPolicy`
decides, in whole jobs, what to submit and what to release, with a keep-warm time.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from distributed.deploy.adaptive import Adaptive
from distributed.scheduler import Scheduler

from ._values import parse_duration
from .pools import pool_targets, scheduler_load
from .scaling_policy import JobScalingPolicy, JobView, ScalingDecision, jobs_for_workers

if TYPE_CHECKING:
    from .cluster import JobQueueCluster

__all__ = ["JobAdaptive", "PoolAdaptive", "WorkerJobKey"]


class WorkerJobKey:
    """Adaptive ``worker_key``: the spec (job) name of a worker, so jobs retire whole.

    Parameters
    ----------
    suffixes : sequence of str
        The worker-name suffixes of one job's workers (``-0``, ``-1``...).
    """

    def __init__(self, suffixes: Sequence[str]):
        self.suffixes = tuple(suffixes)

    def __call__(self, ws: Any) -> str:
        return self.job_name(str(ws.name))

    def job_name(self, worker_name: str) -> str:
        """The job (spec) name a worker belongs to."""
        for suffix in self.suffixes:
            if worker_name.endswith(suffix):
                return worker_name[: -len(suffix)]
        return worker_name


class JobAdaptive(Adaptive):
    """Adaptive scaling in whole jobs, releasing a job only after it has been idle a while.

    Parameters
    ----------
    cluster : JobQueueCluster
        The cluster to scale.
    idle_timeout : str or float, optional
        How long a surplus must last, and a running job must have run no task, before the job
        is released. Default: ``wait_count`` adapt intervals when ``wait_count`` is given,
        else the cluster's ``adapt-idle-timeout`` (60 s).
    **kwargs
        distributed's ``Adaptive`` keywords (``minimum``, ``maximum`` in workers,
        ``interval``, ``target_duration``...).
    """

    cluster: JobQueueCluster

    def __init__(
        self,
        cluster: JobQueueCluster,
        idle_timeout: str | float | None = None,
        **kwargs: Any,
    ):
        super().__init__(cluster, **kwargs)
        if idle_timeout is not None:
            timeout = parse_duration(idle_timeout, "idle_timeout")
        elif kwargs.get("wait_count") is not None and self.interval:
            # distributed's meaning of wait_count: that many intervals before a release
            timeout = self.wait_count * float(self.interval)
        else:
            timeout = cluster._settings.adapt_idle_timeout
        processes = cluster.processes
        cap = cluster._settings.max_jobs
        self.policy = JobScalingPolicy(
            minimum_jobs=int(jobs_for_workers(self.minimum, processes)),
            maximum_jobs=min(jobs_for_workers(self.maximum, processes), cap),
            idle_timeout=timeout,
        )
        self._job_key = WorkerJobKey(cluster._group_suffixes)
        #: Jobs submitted and released by this adaptive instance, for reports.
        self.submitted_jobs = 0
        self.released_jobs = 0

    @property
    def idle_timeout(self) -> float:
        """Seconds of surplus and of idleness before a job is released."""
        return self.policy.idle_timeout

    async def _job_views(self) -> list[JobView]:
        """One view per planned job, oldest first, from the scheduler's worker table."""
        processing: dict[str, Any] = await self.scheduler.processing()
        connected: dict[str, int] = {}
        busy: set[str] = set()
        for address, info in self.cluster.scheduler_info.get("workers", {}).items():
            job = self._job_key.job_name(str(info.get("name")))
            connected[job] = connected.get(job, 0) + 1
            if processing.get(address):
                busy.add(job)
        return [
            JobView(name=name, workers_connected=connected.get(name, 0), busy=name in busy)
            for name in self.cluster.worker_spec
        ]

    async def recommendations(self, target: int) -> dict:
        if len(self.plan) != len(self.requested):
            await self.cluster
        jobs = await self._job_views()
        decision: ScalingDecision = self.policy.decide(
            time.monotonic(), target, self.cluster.processes, jobs
        )
        if decision.submit:
            return {"status": "up", "n": len(jobs) + decision.submit}
        if decision.release:
            return {"status": "down", "workers": list(decision.release)}
        return {"status": "same"}

    # AdaptiveCore declares scale_up(workers: Iterable), but Adaptive calls it with n=<count>
    async def scale_up(self, n: int) -> None:  # type: ignore[override]
        """Plan ``n`` jobs in all (never past ``max-jobs``) and submit the new ones."""
        n = min(int(n), self.cluster._settings.max_jobs)
        self.submitted_jobs += max(n - len(self.cluster.worker_spec), 0)
        self.cluster._scale_to_jobs(n)
        await self.cluster._correct_state()

    async def scale_down(self, workers: Sequence[str]) -> None:  # type: ignore[override]
        """Release these jobs: queued ones are cancelled; running ones have their workers
        retired (their data moved to the remaining workers), then are cancelled."""
        released = [name for name in workers if name in self.cluster.worker_spec]
        for name in released:
            del self.cluster.worker_spec[name]
            self.cluster._supervisor.unwanted(name)
        self.released_jobs += len(released)
        await self.cluster._correct_state()


class PoolAdaptive(JobAdaptive):
    """Adaptive scaling of one pool among several sharing a scheduler.

    The scheduler's own target counts every task; here a pool's target counts only the tasks
    it should run (see :mod:`dask_jobqueue.pools`): a GPU-restricted task never grows a CPU
    pool. Without pools, or with a scheduler in another process, it is :class:`JobAdaptive`.
    """

    async def target(self) -> int:
        cluster = self.cluster
        family = cluster.pool_family()
        scheduler = cluster.scheduler
        if len(family) == 1 or not isinstance(scheduler, Scheduler):
            return await super().target()
        pool_of_worker = {}
        for ws in scheduler.workers.values():
            member = cluster.member_of_worker(str(ws.name))
            if member is not None:
                pool_of_worker[str(ws.name)] = member.name
        ready, total, workers = scheduler_load(scheduler, pool_of_worker)
        shapes = [member.pool_shape() for member in family]
        return pool_targets(ready, total, workers, shapes, self.target_duration)[cluster.name]
