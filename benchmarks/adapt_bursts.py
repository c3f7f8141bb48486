"""Adaptive scaling on the real Slurm: burst -> idle -> burst, and dask-jobqueue #498.

Burst -> idle -> burst: ``adapt(minimum_jobs=0, maximum_jobs=4)``, 40 half-second tasks, an
idle pause, 40 more; once with the default keep-warm time (``adapt-idle-timeout``, 60 s) and
once with ``idle_timeout="3s"`` (what distributed's defaults give: ``wait_count=3`` intervals
of 1 s), in the same run. Reported: jobs and submit/cancel commands over the run, seconds from
the second burst's submission to its first result (each task sleeps 0.5 s), and idle
worker-seconds (connected workers running no task, sampled every 0.5 s) during the run and
until every job is released.

#498: ``cores=4, processes=4``, ``adapt(maximum=8)`` and ``adapt(maximum=6)`` with 300 pending
0.2-s tasks: jobs, submits and cancels until the last result.

Usage (real Slurm running, 8 free CPUs)::

    python benchmarks/adapt_bursts.py --pause 30
"""

from __future__ import annotations

import argparse
import os
import threading
import time

from distributed import Client, as_completed

from dask_jobqueue import SLURMCluster


def sleepy(seconds):
    def task(i):
        time.sleep(seconds)
        return i

    return task


class IdleSampler:
    """Integrates the number of connected workers that run no task, every ``step`` s."""

    def __init__(self, client: Client, step: float = 0.5):
        self.client = client
        self.step = step
        self.idle_worker_seconds = 0.0
        self.connected = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.step):
            idle, connected = self.client.run_on_scheduler(
                lambda dask_scheduler: (
                    sum(1 for ws in dask_scheduler.workers.values() if not ws.processing),
                    len(dask_scheduler.workers),
                )
            )
            self.idle_worker_seconds += idle * self.step
            self.connected = connected

    def stop(self) -> float:
        self._stop.set()
        self._thread.join()
        return self.idle_worker_seconds


def cluster_for(name: str, **kwargs) -> SLURMCluster:
    options = {"cores": 1, "memory": "1GB", "processes": 1, "walltime": "00:15:00"}
    options.update(kwargs)
    return SLURMCluster(job_name=name, scheduler_options={"dashboard_address": ":0"}, **options)


def burst_idle_burst(pause: float, idle_timeout: str | None) -> dict:
    name = f"bench-adapt-{os.getpid()}"
    with cluster_for(name) as cluster, Client(cluster) as client:
        extra = {} if idle_timeout is None else {"idle_timeout": idle_timeout}
        adaptive = cluster.adapt(minimum_jobs=0, maximum_jobs=4, **extra)
        sampler = IdleSampler(client)
        began = time.monotonic()
        client.gather(client.map(sleepy(0.5), range(40), pure=False))
        time.sleep(pause)
        submitted = time.monotonic()
        second = client.map(sleepy(0.5), range(100, 140), pure=False)
        next(as_completed(second))
        latency = time.monotonic() - submitted
        client.gather(second)
        del second
        run_seconds = time.monotonic() - began
        idle_in_run = sampler.idle_worker_seconds
        # the tail: until adapt released every job
        while cluster.workers and time.monotonic() - began < run_seconds + 300:
            time.sleep(0.5)
        tail_seconds = time.monotonic() - began - run_seconds
        idle_total = sampler.stop()
        counts = cluster.command_counts
        return {
            "keep-warm": f"{adaptive.idle_timeout:g} s",
            "jobs": len({r.job_id for r in cluster.jobs}),
            "submit commands": counts.get("submit", 0),
            "cancel commands": counts.get("cancel", 0),
            "second burst first result": f"{latency:.2f} s",
            "run": f"{run_seconds:.1f} s",
            "idle worker-s in run": f"{idle_in_run:.0f}",
            "released after": f"{tail_seconds:.0f} s",
            "idle worker-s incl. release": f"{idle_total:.0f}",
        }


def many_pending(maximum: int) -> dict:
    name = f"bench-498-{os.getpid()}"
    with (
        cluster_for(name, cores=4, processes=4, memory="4GB") as cluster,
        Client(cluster) as client,
    ):
        cluster.adapt(maximum=maximum)
        began = time.monotonic()
        client.gather(client.map(sleepy(0.2), range(300), pure=False))
        elapsed = time.monotonic() - began
        counts = cluster.command_counts
        return {
            "maximum": maximum,
            "jobs": len({r.job_id for r in cluster.jobs}),
            "submit commands": counts.get("submit", 0),
            "cancel commands": counts.get("cancel", 0),
            "all results": f"{elapsed:.1f} s",
        }


def table(rows: list[dict]) -> str:
    keys = list(rows[0])
    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    lines += ["| " + " | ".join(str(row[k]) for k in keys) + " |" for row in rows]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--pause", type=float, default=30.0)
    args = parser.parse_args()
    rows = [burst_idle_burst(args.pause, None), burst_idle_burst(args.pause, "3s")]
    print(table(rows), flush=True)
    print()
    print(table([many_pending(8), many_pending(6)]), flush=True)


if __name__ == "__main__":
    main()
