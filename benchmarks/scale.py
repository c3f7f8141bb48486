"""Client cost of tracking many jobs, with the file-backed fake Slurm (``fake_slurm.py``).

For each number of jobs: ``scale(jobs=N)`` until every job is tracked, then polls at a
1 s interval; reports the client's CPU per poll (this process only: the fake commands are
other processes; less what the process spends idle, measured for 3 s before scaling), the worst event-loop stall seen by a probe task that sleeps 5 ms in a loop
(per phase), then the time of ``scale(jobs=N // 2)`` until the queue holds N/2 jobs, and of
``close()``. Jobs never start (the fake keeps them pending), so no worker connects.

Usage::

    python benchmarks/scale.py --jobs 1000 10000 50000
    python benchmarks/scale.py --jobs 50000 --profile /tmp/poll.prof   # cProfile of polls

``--watchdog`` also starts the owner watchdog (off by default: it is a separate process
whose state file the client rewrites when the set of live jobs changes).
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import os
import tempfile
import time
from pathlib import Path

import dask
import fake_slurm


class LoopLag:
    """The worst delay of a 5 ms sleep on the running loop, since the last ``take()``."""

    def __init__(self, period: float = 0.005):
        self.period = period
        self.worst = 0.0
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        self._task = asyncio.ensure_future(self._run())

    async def _run(self) -> None:
        while True:
            start = time.perf_counter()
            await asyncio.sleep(self.period)
            self.worst = max(self.worst, time.perf_counter() - start - self.period)

    def take(self) -> float:
        worst, self.worst = self.worst, 0.0
        return worst

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()


def queue_length(directory: Path) -> int:
    path = directory / "queue"
    return len(path.read_text().splitlines()) if path.exists() else 0


async def until(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(what)
        await asyncio.sleep(0.01)


async def until_queue(directory: Path, most: int, timeout: float) -> None:
    """Until the fake queue holds at most ``most`` jobs (read in a thread: it is big)."""
    deadline = time.monotonic() + timeout
    while await asyncio.to_thread(queue_length, directory) > most:
        if time.monotonic() > deadline:
            raise TimeoutError(f"queue still above {most} jobs")
        await asyncio.sleep(0.01)


async def measure(jobs: int, polls: int, directory: Path, profile: str | None, phase: str) -> dict:
    from dask_jobqueue import SLURMCluster

    lag = LoopLag()
    lag.start()
    result: dict = {"jobs": jobs}
    cluster = await SLURMCluster(
        cores=1,
        memory="1GB",
        processes=1,
        asynchronous=True,
        scheduler_options={"dashboard_address": ":0"},
    )
    try:
        idle_cpu, idle_started = time.process_time(), time.perf_counter()
        await asyncio.sleep(3)  # what the loop costs with no job (scheduler, probe)
        idle_per_s = (time.process_time() - idle_cpu) / (time.perf_counter() - idle_started)
        result["idle_cpu_ms_per_s"] = idle_per_s * 1000
        lag.take()
        profiler = cProfile.Profile() if profile and phase == "scale" else None
        if profiler:
            profiler.enable()
        started = time.perf_counter()
        cluster.scale(jobs=jobs)
        await until(lambda: len(cluster._supervisor.tracker) >= jobs, 600, "jobs tracked")
        result["scale_up_s"] = time.perf_counter() - started
        if profiler:
            profiler.disable()
            profiler.dump_stats(profile)
        result["scale_up_stall_ms"] = lag.take() * 1000

        poller = cluster._supervisor.poller
        first = poller.polls
        await until(lambda: poller.polls >= first + 2, 120, "first polls")  # warm
        profiler = cProfile.Profile() if profile and phase == "poll" else None
        if profiler:
            profiler.enable()
        lag.take()
        cpu, first, started = time.process_time(), poller.polls, time.perf_counter()
        await until(lambda: poller.polls >= first + polls, 60 + 10 * polls, "polls")
        cpu = time.process_time() - cpu - idle_per_s * (time.perf_counter() - started)
        done = poller.polls - first
        if profiler:
            profiler.disable()
            profiler.dump_stats(profile)
        result["cpu_per_poll_ms"] = cpu / done * 1000
        result["cpu_per_job_us"] = cpu / done / jobs * 1e6
        result["poll_stall_ms"] = lag.take() * 1000

        profiler = cProfile.Profile() if profile and phase == "down" else None
        if profiler:
            profiler.enable()
        started = time.perf_counter()
        cluster.scale(jobs=jobs // 2)
        await until_queue(directory, jobs // 2, 120)
        result["scale_down_s"] = time.perf_counter() - started
        if profiler:
            profiler.disable()
            profiler.dump_stats(profile)
        result["scale_down_stall_ms"] = lag.take() * 1000
    finally:
        started = time.perf_counter()
        await cluster.close()
        result["close_s"] = time.perf_counter() - started
        result["close_stall_ms"] = lag.take() * 1000
        lag.stop()
    result["left_in_queue"] = queue_length(directory)
    return result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--polls", type=int, default=5)
    parser.add_argument("--watchdog", action="store_true")
    parser.add_argument("--profile", help="write a cProfile of one phase here")
    parser.add_argument("--profile-phase", choices=["scale", "poll", "down"], default="poll")
    args = parser.parse_args()
    columns = (
        "jobs",
        "idle_cpu_ms_per_s",
        "scale_up_s",
        "scale_up_stall_ms",
        "cpu_per_poll_ms",
        "cpu_per_job_us",
        "poll_stall_ms",
        "scale_down_s",
        "scale_down_stall_ms",
        "close_s",
        "close_stall_ms",
        "left_in_queue",
    )
    print(" ".join(f"{c:>18}" for c in columns), flush=True)
    for jobs in args.jobs:
        with tempfile.TemporaryDirectory(prefix="fake-slurm-") as tmp:
            directory = Path(tmp)
            bin_dir = fake_slurm.install(directory)
            os.environ["PATH"] = f"{bin_dir}{os.pathsep}{os.environ['PATH']}"
            os.environ["FAKE_SLURM_DIR"] = str(directory)
            settings = {
                "jobqueue.slurm.poll-interval": "1s",
                "jobqueue.slurm.poll-interval-max": "1s",
                "jobqueue.slurm.owner-watchdog": args.watchdog,
                "jobqueue.slurm.log-directory": None,
                "jobqueue.slurm.walltime": None,
            }
            with dask.config.set(settings):
                result = asyncio.run(
                    measure(jobs, args.polls, directory, args.profile, args.profile_phase)
                )
            os.environ["PATH"] = os.environ["PATH"].split(os.pathsep, 1)[1]
        cells = [
            f"{result[c]:>18.3f}" if isinstance(result[c], float) else f"{result[c]:>18}"
            for c in columns
        ]
        print(" ".join(cells), flush=True)


if __name__ == "__main__":
    main()
