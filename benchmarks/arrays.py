"""Job arrays against one submit command per job, on the real Slurm, in one run.

For each of ``job-arrays: auto`` and ``never``:

* ``scale(N)`` of held jobs (``--hold``): seconds until every job is listed by
  ``squeue -r``, and how many ``sbatch`` calls it took;
* ``close()``: seconds until none of them is listed any more, and how many ``scancel`` calls;
* 8 real workers (1 core each): seconds from ``scale(8)`` until 8 workers are connected.

Plus the physical limit of the last one: 8 nanny workers started directly (no batch system)
against a local scheduler, in the same run. Usage (real Slurm running)::

    python benchmarks/arrays.py --jobs 200 1000 --label "MaxArraySize=1001"
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import time

import dask
from distributed import Client, Scheduler

from dask_jobqueue import SLURMCluster

NO_DASHBOARD = {"dashboard_address": ":0"}


def listed(name: str) -> int:
    out = subprocess.run(
        ["squeue", "-h", "-r", "-n", name, "-o", "%i"], capture_output=True, text=True, check=True
    ).stdout
    return len(out.split())


def wait(predicate, timeout: float = 600.0, interval: float = 0.01) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError("benchmark condition not reached")
        time.sleep(interval)


def held_jobs(mode: str, jobs: int) -> dict[str, float]:
    name = f"bench-arr-{mode}-{os.getpid()}"
    with dask.config.set({"jobqueue.slurm.job-arrays": mode}):
        cluster = SLURMCluster(
            cores=1,
            memory="100MB",
            processes=1,
            job_name=name,
            job_extra_directives=["--hold"],
            scheduler_options=NO_DASHBOARD,
        )
        try:
            started = time.perf_counter()
            cluster.scale(jobs=jobs)
            wait(lambda: listed(name) == jobs)
            submitted = time.perf_counter() - started
            sbatch = cluster.command_counts.get("submit", 0)
            started = time.perf_counter()
            cluster.close()
            wait(lambda: listed(name) == 0)
            closed = time.perf_counter() - started
            scancel = cluster.command_counts.get("cancel", 0)
        finally:
            cluster.close()
            subprocess.run(["scancel", "-n", name], check=False)
    return {"submit_s": submitted, "sbatch": sbatch, "close_s": closed, "scancel": scancel}


def workers_through_slurm(mode: str, n: int = 8) -> float:
    name = f"bench-w-{mode}-{os.getpid()}"
    with dask.config.set({"jobqueue.slurm.job-arrays": mode}):
        with SLURMCluster(
            cores=1,
            memory="1GB",
            processes=1,
            job_name=name,
            walltime="00:10:00",
            scheduler_options=NO_DASHBOARD,
        ) as cluster, Client(cluster) as client:
            started = time.perf_counter()
            cluster.scale(n)
            client.wait_for_workers(n, timeout=300)
            elapsed = time.perf_counter() - started
    subprocess.run(["scancel", "-n", name], check=False)
    return elapsed


def physical_limit(n: int = 8) -> float:
    """8 nanny workers started directly against a local scheduler."""

    async def run() -> float:
        async with Scheduler(dashboard_address=":0", port=0) as scheduler:
            started = time.perf_counter()
            procs = [
                subprocess.Popen(
                    [sys.executable, "-m", "distributed.cli.dask_worker", scheduler.address,
                     "--nthreads", "1", "--memory-limit", "1GB", "--nanny"],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
                for _ in range(n)
            ]
            try:
                while len(scheduler.workers) < n:
                    await asyncio.sleep(0.01)
                return time.perf_counter() - started
            finally:
                for proc in procs:
                    proc.terminate()
                for proc in procs:
                    proc.wait()

    return asyncio.run(run())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, nargs="+", default=[200, 1000])
    parser.add_argument("--label", default="")
    parser.add_argument("--no-workers", action="store_true", help="skip the 8-worker runs")
    args = parser.parse_args()
    config = subprocess.run(["scontrol", "show", "config"], capture_output=True, text=True).stdout
    limit = next((line for line in config.splitlines() if line.startswith("MaxArraySize")), "")
    print(f"# {args.label} {' '.join(limit.split())}")
    print("| jobs | job-arrays | until all in squeue | sbatch calls | close() until queue empty "
          "| scancel calls |")
    print("|---:|---|---:|---:|---:|---:|")
    for jobs in args.jobs:
        results = {}
        for mode in ("auto", "never"):
            r = held_jobs(mode, jobs)
            results[mode] = r
            print(f"| {jobs} | {mode} | {r['submit_s']:.3f} s | {r['sbatch']} | "
                  f"{r['close_s']:.3f} s | {r['scancel']} |", flush=True)
        ratio = results["never"]["submit_s"] / results["auto"]["submit_s"]
        print(f"|  | speed-up of arrays | {ratio:.1f}x |  |  |  |", flush=True)
    if not args.no_workers:
        limit_s = physical_limit()
        print(f"\n8 nanny workers started directly: {limit_s:.2f} s")
        for mode in ("auto", "never"):
            elapsed = workers_through_slurm(mode)
            print(f"8 workers through Slurm, job-arrays {mode}: {elapsed:.2f} s "
                  f"({elapsed / limit_s:.2f}x the limit)", flush=True)


if __name__ == "__main__":
    main()
