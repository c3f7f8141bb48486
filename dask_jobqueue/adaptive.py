"""Adaptive scaling in whole jobs (``cluster.adapt()``)."""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from distributed.deploy.adaptive import Adaptive
from distributed.scheduler import Scheduler

from .pools import pool_targets, scheduler_load

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
    """Adaptive scaling in whole jobs.

    distributed's Adaptive counts workers; with several workers per job it would retire one
    worker of a job, which cancels the whole job, which it then starts again (upstream #498).
    Here targets are rounded up to whole jobs and only whole jobs are retired.
    """

    cluster: JobQueueCluster
    # distributed types the keys as WorkerState; with a worker_key they are what it returns
    close_counts: defaultdict[str, int]  # type: ignore[assignment]

    async def recommendations(self, target: int) -> dict:
        cluster = self.cluster
        if len(self.plan) != len(self.requested):
            await cluster
        key = WorkerJobKey(cluster._group_suffixes)
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
        return {
            "status": "down",
            "workers": [f"{job}{s}" for job in firmly_close for s in suffixes],
        }

    # AdaptiveCore declares scale_up(workers: Iterable), but Adaptive calls it with n=<count>
    async def scale_up(self, n: int) -> None:  # type: ignore[override]
        # never past max-jobs (an unbounded adapt() facing a million tasks)
        most = self.cluster._settings.max_jobs * self.cluster.processes
        self.cluster._scale_to_workers(min(int(n), most))
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
