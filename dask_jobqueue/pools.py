"""Which pool a task's demand grows, and how many workers each pool's demand asks for.

Several pools share one Dask scheduler (``cluster.add_pool``). Under ``adapt()`` each pool
grows only for tasks its workers can run, and a task is counted once, for one pool: the
pool with the fewest kinds of resource among those that can run it. So a task restricted to
``{"GPU": 1}`` grows a GPU pool, never a CPU pool; a plain task grows the plain pool, and a
GPU pool only when no plain pool exists. Tasks already running count for the pool of the
worker running them.

The decisions are pure (:func:`pick_pool`, :func:`pool_targets`); :func:`scheduler_load`
reads them from the in-process scheduler.
"""

from __future__ import annotations

import math
import shlex
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import dask.config
from dask.utils import parse_timedelta

__all__ = [
    "PoolShape",
    "ReadyTask",
    "WorkerLoad",
    "pick_pool",
    "pool_targets",
    "scheduler_load",
    "worker_resources",
]

#: Ready tasks sampled per pass; the rest are counted as the sample's average (the Dask
#: scheduler samples the same way: 50,000 pending tasks must not cost 50,000 lookups).
SAMPLE = 1000


@dataclass(frozen=True)
class PoolShape:
    """What one pool's workers offer."""

    name: str
    resources: Mapping[str, float] = field(default_factory=dict)
    threads_per_worker: int = 1


@dataclass(frozen=True)
class ReadyTask:
    """A task waiting for a worker: its resource restrictions and expected duration (s)."""

    restrictions: Mapping[str, float] | None
    duration: float


@dataclass(frozen=True)
class WorkerLoad:
    """A connected worker of a pool."""

    pool: str
    occupancy: float  # expected seconds of the work assigned to it
    processing: int  # tasks assigned to it
    memory_used: int = 0
    memory_limit: int = 0


def pick_pool(restrictions: Mapping[str, float] | None, pools: Sequence[PoolShape]) -> str | None:
    """The pool whose demand a task with these restrictions counts for (``None``: no pool
    can run it). Among the pools that can, the one with the fewest kinds of resource;
    ties go to the first (the cluster's own pool comes first)."""
    best: PoolShape | None = None
    for pool in pools:
        if restrictions and any(
            pool.resources.get(r, 0) < need for r, need in restrictions.items()
        ):
            continue
        if best is None or len(pool.resources) < len(best.resources):
            best = pool
    return None if best is None else best.name


def pool_targets(
    ready: Sequence[ReadyTask],
    ready_total: int,
    workers: Sequence[WorkerLoad],
    pools: Sequence[PoolShape],
    target_duration: float,
) -> dict[str, int]:
    """Workers each pool should have for this load.

    Parameters
    ----------
    ready : sequence of ReadyTask
        Tasks waiting for a worker (a sample of at most :data:`SAMPLE`).
    ready_total : int
        How many tasks wait in all (the sample stands for them).
    workers : sequence of WorkerLoad
        The connected workers of every pool.
    pools : sequence of PoolShape
        The pools, the cluster's own first.
    target_duration : float
        Seconds the queued work should take: the work in seconds divided by this is the
        number of threads asked for (as ``distributed.adaptive.target-duration``).

    Returns
    -------
    dict
        Pool name to target number of workers. A pool with ready tasks and no worker asks
        for at least one; a pool's target never exceeds its tasks (ready and running) in
        threads; a pool whose workers use more than 60 % of their memory asks for twice its
        workers.
    """
    scale = ready_total / len(ready) if ready else 0.0
    ready_seconds = {p.name: 0.0 for p in pools}
    ready_count = {p.name: 0.0 for p in pools}
    for task in ready:
        name = pick_pool(task.restrictions, pools)
        if name is not None:
            ready_seconds[name] += task.duration * scale
            ready_count[name] += scale
    targets = {}
    for pool in pools:
        mine = [w for w in workers if w.pool == pool.name]
        occupancy = sum(w.occupancy for w in mine)
        tasks = math.ceil(ready_count[pool.name]) + sum(w.processing for w in mine)
        threads = min(math.ceil((occupancy + ready_seconds[pool.name]) / target_duration), tasks)
        wanted = math.ceil(threads / max(1, pool.threads_per_worker))
        if ready_count[pool.name] and not mine:
            wanted = max(1, wanted)
        limit = sum(w.memory_limit for w in mine)
        if limit and sum(w.memory_used for w in mine) > 0.6 * limit:
            wanted = max(wanted, 2 * len(mine))
        targets[pool.name] = wanted
    return targets


def worker_resources(worker_args: Iterable[str]) -> dict[str, float]:
    """The resources a worker advertises, from its ``--resources`` arguments
    (``--resources "GPU=1 MEM=2e9"``, ``--resources=GPU=1,FOO=2``)."""
    args = list(worker_args)
    specs = []
    for k, arg in enumerate(args):
        if arg == "--resources" and k + 1 < len(args):
            specs.append(args[k + 1])
        elif arg.startswith("--resources="):
            specs.append(arg.split("=", 1)[1])
    resources: dict[str, float] = {}
    for spec in specs:
        for item in shlex.split(spec.replace(",", " ")):
            name, sep, amount = item.partition("=")
            if not sep:
                continue
            try:
                resources[name] = float(amount)
            except ValueError:
                continue  # the worker refuses it at start; nothing to count here
    return resources


def with_resource(worker_args: Sequence[str], name: str, amount: str) -> list[str]:
    """``worker_args`` advertising the resource ``name`` too: one ``--resources`` argument
    holding the ones given (a worker takes only its last ``--resources``), unchanged if they
    name ``name`` already."""
    args = list(worker_args)
    if name in worker_resources(args):
        return args
    kept: list[str] = []
    specs: list[str] = []
    k = 0
    while k < len(args):
        if args[k] == "--resources" and k + 1 < len(args):
            specs.append(args[k + 1].replace(",", " "))
            k += 2
            continue
        if args[k].startswith("--resources="):
            specs.append(args[k].split("=", 1)[1].replace(",", " "))
        else:
            kept.append(args[k])
        k += 1
    return [*kept, "--resources", " ".join([*specs, f"{name}={amount}"]).strip()]


def scheduler_load(
    scheduler: Any, pool_of_worker: Mapping[str, str]
) -> tuple[list[ReadyTask], int, list[WorkerLoad]]:
    """The ready tasks (sampled) and the workers' load of an in-process Dask scheduler.

    ``pool_of_worker``: pool name by worker name; workers of no pool are left out.
    """
    unknown = parse_timedelta(dask.config.get("distributed.scheduler.unknown-task-duration"))
    ready: list[ReadyTask] = []
    total = len(scheduler.queued) + len(scheduler.unrunnable)
    for source in (scheduler.queued, scheduler.unrunnable):
        for ts in source:
            if len(ready) >= SAMPLE:
                break
            average = ts.prefix.duration_average  # negative until one task of it ran
            ready.append(
                ReadyTask(ts.resource_restrictions or None, average if average >= 0 else unknown)
            )
    workers = []
    for ws in scheduler.workers.values():
        pool = pool_of_worker.get(str(ws.name))
        if pool is None:
            continue
        workers.append(
            WorkerLoad(pool, ws.occupancy, len(ws.processing), ws.nbytes, ws.memory_limit or 0)
        )
    return ready, total, workers
