"""Status commands per minute as a function of the number of jobs.

The poller runs one status command per poll for all jobs of a cluster, so the rate must not
grow with the number of jobs. Usage (Slurm must be running for ``slurm``)::

    python benchmarks/status_calls.py --backend slurm --jobs 1 8 32 --seconds 60
    python benchmarks/status_calls.py --backend local --jobs 1 4 --seconds 30
"""

from __future__ import annotations

import argparse
import time

import dask


def measure(backend: str, jobs: int, seconds: float) -> tuple[int, float, str]:
    if backend == "slurm":
        from dask_jobqueue import SLURMCluster as Cluster
    else:
        from dask_jobqueue.local import LocalCluster as Cluster
    with Cluster(cores=1, memory="500MB", processes=1, scheduler_options={"dashboard_address": ":0"}) as cluster:
        cluster.scale(jobs=jobs)
        start_calls = cluster.status_calls
        started = time.monotonic()
        time.sleep(seconds)
        calls = cluster.status_calls - start_calls
        elapsed = time.monotonic() - started
        summary = cluster.jobs_summary()
    return calls, calls * 60 / elapsed, summary


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--backend", choices=["local", "slurm"], default="local")
    parser.add_argument("--jobs", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--seconds", type=float, default=30)
    args = parser.parse_args()
    print(f"{'jobs':>5} {'status calls':>13} {'calls/min':>10}  job states at the end")
    with dask.config.set({f"jobqueue.{args.backend}.poll-interval": "2s", f"jobqueue.{args.backend}.poll-interval-max": "30s"}):
        for jobs in args.jobs:
            calls, per_minute, summary = measure(args.backend, jobs, args.seconds)
            print(f"{jobs:>5} {calls:>13} {per_minute:>10.1f}  {summary}")


if __name__ == "__main__":
    main()
