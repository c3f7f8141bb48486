"""Status commands per minute as a function of the number of jobs.

Every poll asks the batch system about all live jobs of a cluster at once, running the
dialect's status steps (Slurm: ``squeue``, plus ``sacct`` only for ids squeue no longer lists;
SGE: ``qstat -xml``, plus one ``qstat -xml -j`` for all pending jobs, plus ``qacct`` per job
that just left the queue). This counts the status *commands* actually run, and the polls, so
the rate per job can be read off. Usage (the batch system must be running)::

    python benchmarks/status_calls.py --backend slurm --jobs 1 8 32 --seconds 60
    python benchmarks/status_calls.py --backend sge --jobs 1 8 32 --seconds 60
    python benchmarks/status_calls.py --backend local --jobs 1 4 --seconds 30
"""

from __future__ import annotations

import argparse
import time

import dask


def cluster_class(backend: str) -> type:
    if backend == "slurm":
        from dask_jobqueue import SLURMCluster

        return SLURMCluster
    if backend == "sge":
        from dask_jobqueue import SGECluster

        return SGECluster
    from dask_jobqueue.local import LocalCluster

    return LocalCluster


def measure(backend: str, jobs: int, seconds: float) -> tuple[int, int, float, str]:
    cls = cluster_class(backend)
    with cls(
        cores=1, memory="500MB", processes=1, scheduler_options={"dashboard_address": ":0"}
    ) as cluster:
        cluster.scale(jobs=jobs)
        start_commands, start_polls = cluster.status_calls, cluster.polls
        started = time.monotonic()
        time.sleep(seconds)
        commands = cluster.status_calls - start_commands
        polls = cluster.polls - start_polls
        elapsed = time.monotonic() - started
        summary = cluster.jobs_summary()
    return commands, polls, commands * 60 / elapsed, summary


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--backend", choices=["local", "slurm", "sge"], default="local")
    parser.add_argument("--jobs", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--seconds", type=float, default=30)
    args = parser.parse_args()
    print(
        f"{'jobs':>5} {'status commands':>16} {'polls':>6} {'commands/min':>13}  job states at the end"
    )
    with dask.config.set(
        {
            f"jobqueue.{args.backend}.poll-interval": "2s",
            f"jobqueue.{args.backend}.poll-interval-max": "30s",
        }
    ):
        for jobs in args.jobs:
            commands, polls, per_minute, summary = measure(args.backend, jobs, args.seconds)
            print(f"{jobs:>5} {commands:>16} {polls:>6} {per_minute:>13.1f}  {summary}")


if __name__ == "__main__":
    main()
