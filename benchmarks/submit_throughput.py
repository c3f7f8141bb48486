"""Time to submit N jobs and to cancel them all, for a real Slurm or the LSF emulator.

The jobs only sleep (a prologue of ``sleep 600`` before the worker command), so the figure is
the submission path alone: script rendering, the submit commands (at most
``submit-concurrency`` at a time) and job-id parsing; then ``close()`` cancels everything
with one cancel command. Usage::

    python benchmarks/submit_throughput.py --backend slurm --jobs 16 64   # Slurm running
    python benchmarks/submit_throughput.py --backend lsf --jobs 16 64     # emulator
"""

from __future__ import annotations

import argparse
import tempfile
import time

import dask


def measure(backend: str, jobs: int, concurrency: int) -> tuple[float, float]:
    if backend == "slurm":
        from dask_jobqueue import SLURMCluster as Cluster
    else:
        from dask_jobqueue import LSFCluster as Cluster
    with dask.config.set({f"jobqueue.{backend}.submit-concurrency": concurrency}):
        cluster = Cluster(
            cores=1,
            memory="100MB",
            processes=1,
            job_script_prologue=["sleep 600"],
            scheduler_options={"dashboard_address": ":0"},
        )
        started = time.perf_counter()
        cluster.scale(jobs=jobs)
        while len(cluster.workers) < jobs:
            time.sleep(0.01)
        submitted = time.perf_counter() - started
        started = time.perf_counter()
        cluster.close()
        closed = time.perf_counter() - started
    return submitted, closed


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--backend", choices=["slurm", "lsf"], default="lsf")
    parser.add_argument("--jobs", type=int, nargs="+", default=[16, 64])
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8])
    args = parser.parse_args()
    context = None
    if args.backend == "lsf":
        import os
        import sys
        from pathlib import Path

        # The emulators live in the repository's tests package, not in the installed library.
        sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
        from tests.emulator import emulated_scheduler

        home = tempfile.mkdtemp(prefix="bench-lsf-")
        context = emulated_scheduler("lsf", home, slots=8)
        os.environ.update(context)
    print(f"{'jobs':>5} {'concurrency':>12} {'submit s':>9} {'jobs/s':>7} {'close s':>8}")
    try:
        for jobs in args.jobs:
            for concurrency in args.concurrency:
                submitted, closed = measure(args.backend, jobs, concurrency)
                print(
                    f"{jobs:>5} {concurrency:>12} {submitted:>9.2f} {jobs / submitted:>7.1f} {closed:>8.2f}"
                )
    finally:
        if context is not None:
            context.__exit__(None, None, None)


if __name__ == "__main__":
    main()
