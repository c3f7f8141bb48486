"""One poll of many *single* Slurm jobs (no arrays) against the file-backed fake Slurm.

With arrays, ``squeue -j`` names one id per array; with single jobs (``job-arrays: never``,
or jobs that differ) it names every job. This fills the fake's queue with N pending single
jobs, then times one engine poll of all of them: the status commands run (real processes:
the fake ``squeue`` on ``PATH``), the longest argument any of them got, and whether every job
came back. ``--unchunked`` runs the Slurm steps without their ``max_ids`` (one ``squeue`` for
all ids, as before status commands were split).

Usage::

    python benchmarks/single_jobs_poll.py --jobs 1000 10000 50000
    python benchmarks/single_jobs_poll.py --jobs 50000 --unchunked
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import os
import tempfile
import time
from pathlib import Path

import fake_slurm

from dask_jobqueue._shell import CommandError, CommandRunner
from dask_jobqueue.engine import BatchSystem
from dask_jobqueue.slurm import SLURMJob


class MeasuringRunner(CommandRunner):
    """The real runner, noting the longest single argument of each command."""

    def __init__(self) -> None:
        self.longest: list[int] = []

    async def run(self, argv, *, stdin=None, timeout=None):
        self.longest.append(max(len(str(a).encode()) for a in argv))
        return await super().run(argv, stdin=stdin, timeout=timeout)


def unchunked_job_class() -> type[SLURMJob]:
    steps = tuple(dataclasses.replace(s, max_ids=None) for s in SLURMJob.status_steps)
    return type("UnchunkedSLURMJob", (SLURMJob,), {"status_steps": steps})


def one_poll(jobs: int, unchunked: bool) -> str:
    with tempfile.TemporaryDirectory() as tmp:
        bin_dir = fake_slurm.install(tmp)
        os.environ["PATH"] = f"{bin_dir}{os.pathsep}{os.environ['PATH']}"
        os.environ["FAKE_SLURM_DIR"] = tmp
        ids = [str(100000 + k) for k in range(jobs)]
        (Path(tmp) / "queue").write_text("".join(f"{i}|\n" for i in ids))
        job_cls = unchunked_job_class() if unchunked else SLURMJob
        runner = MeasuringRunner()
        engine = BatchSystem(job_cls("tcp://127.0.0.1:1", cores=1, memory="1GB"), runner=runner)
        engine.adopt(ids)
        start = time.perf_counter()
        try:
            statuses = asyncio.run(engine.query(ids))
            outcome = f"{len(statuses)} of {jobs} listed"
        except (CommandError, OSError) as exc:
            outcome = f"poll failed: {str(exc).splitlines()[0][:90]}"
        elapsed = time.perf_counter() - start
        engine.release(ids)
        return (
            f"| {jobs:,} | {'no' if unchunked else 'yes'} | {len(runner.longest)} | "
            f"{max(runner.longest, default=0):,} B | {elapsed:.2f} s | {outcome} |"
        )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, nargs="+", default=[1000, 10000, 50000])
    parser.add_argument("--unchunked", action="store_true")
    args = parser.parse_args()
    print("| single jobs | split | status commands | longest argument | poll | result |")
    print("|---:|---|---:|---:|---:|---|")
    for jobs in args.jobs:
        print(one_poll(jobs, args.unchunked), flush=True)


if __name__ == "__main__":
    main()
