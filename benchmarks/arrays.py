"""Job arrays against one submit command per job, on the real Slurm, in one run.

For each of ``job-arrays: auto`` and ``never``:

* ``scale(N)`` of held jobs (``--hold``): seconds until every job is listed by
  ``squeue -r``, and how many ``sbatch`` calls it took;
* ``close()``: seconds until none of them is listed any more, and how many ``scancel`` calls;
* 8 real workers (1 core each): seconds from ``scale(8)`` until 8 workers are connected,
  split into Slurm's share (until the last job script began) and the rest.

Plus the physical limit of the last one: 8 nanny workers started directly (no batch system)
against a local scheduler; the three are measured in interleaved rounds (``--repeats``) of the
same run, and medians reported. Usage (real Slurm running)::

    python benchmarks/arrays.py --jobs 200 1000 --label "MaxArraySize=1001"
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

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


def workers_through_slurm(mode: str, n: int = 8) -> tuple[float, float]:
    """Seconds from ``scale(n)`` until ``n`` workers are connected, and until the last job
    script started (Slurm's share: submission, allocation, launch)."""
    name = f"bench-w-{mode}-{os.getpid()}"
    stamps = Path(tempfile.mkdtemp(prefix="bench-starts-"))
    with dask.config.set({"jobqueue.slurm.job-arrays": mode}):
        with (
            SLURMCluster(
                cores=1,
                memory="1GB",
                processes=1,
                job_name=name,
                walltime="00:10:00",
                scheduler_options=NO_DASHBOARD,
                # one `date` per job: when its script began (wall clock, as time.time())
                job_script_prologue=[f"date +%s.%N > {stamps}/$$"],
            ) as cluster,
            Client(cluster) as client,
        ):
            wall_start = time.time()
            started = time.perf_counter()
            cluster.scale(n)
            client.wait_for_workers(n, timeout=300)
            elapsed = time.perf_counter() - started
    subprocess.run(["scancel", "-n", name], check=False)
    starts = [float(f.read_text()) for f in stamps.iterdir()]
    shutil.rmtree(stamps, ignore_errors=True)
    return elapsed, max(starts) - wall_start


def physical_limit(n: int = 8) -> float:
    """8 nanny workers started directly against a local scheduler."""

    async def run() -> float:
        async with Scheduler(dashboard_address=":0", port=0) as scheduler:
            started = time.perf_counter()
            procs = [
                subprocess.Popen(
                    [
                        sys.executable,
                        "-m",
                        "distributed.cli.dask_worker",
                        scheduler.address,
                        "--nthreads",
                        "1",
                        "--memory-limit",
                        "1GB",
                        "--nanny",
                    ],
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


def connect_benchmark(repeats: int) -> None:
    """Rounds of: the limit, arrays auto, arrays never (interleaved, so load drifts hit all
    three alike); one line per measurement, then the medians."""
    rows: dict[str, list[tuple[float, float]]] = {"limit": [], "auto": [], "never": []}
    print("\n| round | how | connected | last job script started | after that |")
    print("|---:|---|---:|---:|---:|")
    for round_ in range(1, repeats + 1):
        limit_s = physical_limit()
        rows["limit"].append((limit_s, 0.0))
        print(f"| {round_} | 8 nanny workers started directly | {limit_s:.2f} s | | |", flush=True)
        for mode in ("auto", "never"):
            elapsed, last_start = workers_through_slurm(mode)
            rows[mode].append((elapsed, last_start))
            print(
                f"| {round_} | Slurm, job-arrays {mode} | {elapsed:.2f} s | {last_start:.2f} s "
                f"| {elapsed - last_start:.2f} s |",
                flush=True,
            )
    limit = statistics.median(r[0] for r in rows["limit"])
    print(f"\nmedians: limit {limit:.2f} s")
    for mode in ("auto", "never"):
        total = statistics.median(r[0] for r in rows[mode])
        start = statistics.median(r[1] for r in rows[mode])
        after = statistics.median(r[0] - r[1] for r in rows[mode])
        print(
            f"job-arrays {mode}: {total:.2f} s ({total / limit:.2f}x the limit); last script "
            f"started at {start:.2f} s; connected {after:.2f} s after it "
            f"({after / limit:.2f}x the limit)"
        )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument(
        "--jobs",
        type=int,
        nargs="*",
        default=[200, 1000],
        help="held-job sizes (none: only the 8-worker runs)",
    )
    parser.add_argument("--label", default="")
    parser.add_argument("--no-workers", action="store_true", help="skip the 8-worker runs")
    parser.add_argument("--repeats", type=int, default=3, help="rounds of the 8-worker runs")
    args = parser.parse_args()
    config = subprocess.run(["scontrol", "show", "config"], capture_output=True, text=True).stdout
    limit = next((line for line in config.splitlines() if line.startswith("MaxArraySize")), "")
    print(f"# {args.label} {' '.join(limit.split())}")
    if args.jobs:
        print(
            "| jobs | job-arrays | until all in squeue | sbatch calls | close() until queue "
            "empty | scancel calls |"
        )
        print("|---:|---|---:|---:|---:|---:|")
    for jobs in args.jobs:
        results = {}
        for mode in ("auto", "never"):
            r = held_jobs(mode, jobs)
            results[mode] = r
            print(
                f"| {jobs} | {mode} | {r['submit_s']:.3f} s | {r['sbatch']} | "
                f"{r['close_s']:.3f} s | {r['scancel']} |",
                flush=True,
            )
        ratio = results["never"]["submit_s"] / results["auto"]["submit_s"]
        print(f"|  | speed-up of arrays | {ratio:.1f}x |  |  |  |", flush=True)
    if not args.no_workers:
        connect_benchmark(args.repeats)


if __name__ == "__main__":
    main()
