"""Client CPU spent keeping the watchdog's state up to date, as a function of the job count.

Jobs are submitted one at a time (as with ``job_arrays="never"``) through the engine's own
submit path, then each is released (seen ended) one at a time. The submit command is answered
in-process (``sbatch --parsable`` output, no subprocess), so what is measured is the client's
own CPU (``time.process_time``, all its threads). Each count is run with the cluster's
watchdog wiring (``supervisor._watchdog_for``, started) and without it; the state's cost is the CPU
spent in the engine's ``on_live_change`` hook (where the wiring writes the state), summed over
every change. Usage::

    python benchmarks/watchdog_state.py --jobs 500 1000 2000 4000
    python benchmarks/watchdog_state.py --jobs --latency 50000

``--latency N``: wall time of each of the cluster's calls to the watchdog for N jobs added
then N removed one by one (the journal is folded meanwhile, in a thread): median, 99th
percentile and worst, i.e. what one change can cost the event loop.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import time

from dask_jobqueue._shell import CommandResult, CommandRunner
from dask_jobqueue.engine import BatchSystem
from dask_jobqueue.slurm import SLURMJob
from dask_jobqueue.supervisor import _watchdog_for


def run_jobs(jobs: int, watchdog: bool) -> tuple[float, float]:
    """Client CPU seconds to submit then release ``jobs`` jobs one by one, and the part of it
    spent keeping the watchdog's state."""
    counter = itertools.count(1000)

    class Answering(CommandRunner):
        """Every submit command answers with a fresh id, at once."""

        def run_sync(self, argv, *, stdin=None, timeout=None):
            return CommandResult(list(argv), f"{next(counter)}\n", "")

    template = SLURMJob("tcp://127.0.0.1:9", cores=1, memory="1GB")
    engine = BatchSystem(template, submit_concurrency=1, runner=Answering())
    dog = _watchdog_for(engine) if watchdog else None
    in_hook = 0.0
    if dog is not None:
        dog.start()
        hook = engine.on_live_change

        def timed_hook(*args):
            nonlocal in_hook
            before = time.process_time()
            hook(*args)
            in_hook += time.process_time() - before

        engine.on_live_change = timed_hook
    try:
        started = time.process_time()

        async def submit_all() -> list[str]:
            return [await engine.submit(template) for _ in range(jobs)]

        ids = asyncio.run(submit_all())
        for job_id in ids:
            engine.release([job_id])
        return time.process_time() - started, in_hook
    finally:
        engine.close()
        if dog is not None:
            dog.stop()


def latency(jobs: int) -> None:
    template = SLURMJob("tcp://127.0.0.1:9", cores=1, memory="1GB")
    engine = BatchSystem(template)
    dog = _watchdog_for(engine)
    assert dog is not None
    dog.start()
    durations = []
    try:
        for op in ("added", "removed"):
            for i in range(jobs):
                before = time.perf_counter()
                dog.record(**{op: [str(100000 + i)]})
                durations.append(time.perf_counter() - before)
    finally:
        dog.stop()
    durations.sort()
    print(
        f"{jobs} jobs, {len(durations)} changes: median "
        f"{durations[len(durations) // 2] * 1e6:.1f} µs, 99th percentile "
        f"{durations[int(len(durations) * 0.99)] * 1e6:.1f} µs, worst "
        f"{durations[-1] * 1e3:.1f} ms"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, nargs="*", default=[500, 1000, 2000])
    parser.add_argument("--latency", type=int, metavar="N")
    args = parser.parse_args()
    if args.latency:
        latency(args.latency)
    if not args.jobs:
        return
    print("| jobs | client CPU without watchdog | with watchdog | of which state | per change |")
    print("|---:|---:|---:|---:|---:|")
    for jobs in args.jobs:
        without, _ = run_jobs(jobs, watchdog=False)
        with_dog, state = run_jobs(jobs, watchdog=True)
        per_change = state / (2 * jobs) * 1e6
        print(
            f"| {jobs} | {without:.2f} s | {with_dog:.2f} s | {state:.3f} s | "
            f"{per_change:.1f} µs |",
            flush=True,
        )


if __name__ == "__main__":
    main()
