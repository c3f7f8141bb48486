"""A steady stream of one-second tasks through a cluster, measuring what walltimes do to it.

The task is ``time.sleep(1)`` itself: workers must be able to import what they run, and Grid
Engine jobs get neither the client's ``PYTHONPATH`` nor its directory.

Used by ``test_real_lifetime.py`` and ``benchmarks/walltime_stream.py`` (which also runs it
against other versions of the library, so only public API is used here).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

from distributed import Client, as_completed


@dataclass
class StreamResult:
    seconds: float
    submitted: int = 0
    completed: int = 0
    errors: list[str] = field(default_factory=list)
    #: longest time between two task completions (a stalled batch shows here)
    longest_gap: float = 0.0
    #: longest time with no connected worker (sampled every 0.25 s)
    longest_zero_workers: float = 0.0
    min_workers: int = 0
    max_workers: int = 0

    def as_dict(self) -> dict:
        return {
            "seconds": round(self.seconds, 1),
            "submitted": self.submitted,
            "completed": self.completed,
            "errors": self.errors[:5],
            "longest_gap_s": round(self.longest_gap, 2),
            "longest_zero_workers_s": round(self.longest_zero_workers, 2),
            "min_workers": self.min_workers,
            "max_workers": self.max_workers,
        }


def scheduler_worker_count(client: Client) -> int:
    """Workers connected now, asked of the scheduler itself. ``client.scheduler_info()`` can
    return the client's periodic summary, whose ``"workers"`` is empty, when that refresh
    lands between its own fetch and its return: a sampler taking many readings sees a
    spurious 0 (seen once in a CI run)."""
    return client.run_on_scheduler(lambda dask_scheduler: len(dask_scheduler.workers))


def _sample_workers(client: Client, stop: threading.Event, out: list[tuple[float, int]]) -> None:
    while not stop.is_set():
        out.append((time.monotonic(), scheduler_worker_count(client)))
        stop.wait(0.25)


def longest_zero_run(samples: list[tuple[float, int]]) -> float:
    """Longest stretch of consecutive samples with no worker (first zero to next non-zero)."""
    longest, since = 0.0, None
    for t, n in samples:
        if n == 0 and since is None:
            since = t
        elif n and since is not None:
            longest = max(longest, t - since)
            since = None
    if since is not None and samples:
        longest = max(longest, samples[-1][0] - since)
    return longest


def run_stream(
    client: Client, seconds: float, in_flight: int = 4, timeout: float = 180
) -> StreamResult:
    """Keep ``in_flight`` one-second tasks queued for ``seconds``; wait for every one of them
    (at most ``timeout`` after the stream ends)."""
    result = StreamResult(seconds=seconds)
    samples: list[tuple[float, int]] = []
    stop = threading.Event()
    sampler = threading.Thread(target=_sample_workers, args=(client, stop, samples), daemon=True)
    sampler.start()
    started = time.monotonic()
    last_done = started
    pending = as_completed()
    try:
        for _ in range(in_flight):
            pending.add(client.submit(time.sleep, 1.0, pure=False))
            result.submitted += 1
        deadline = None
        while True:
            batch = pending.next_batch(block=False)
            if not batch:
                time.sleep(0.05)
            for future in batch:
                now = time.monotonic()
                result.longest_gap = max(result.longest_gap, now - last_done)
                last_done = now
                try:
                    future.result()  # None: time.sleep
                    result.completed += 1
                except Exception as exc:  # a task lost with its worker too often
                    result.errors.append(repr(exc))
                if now - started < seconds:
                    pending.add(client.submit(time.sleep, 1.0, pure=False))
                    result.submitted += 1
            if not pending.count():
                break
            if time.monotonic() - started >= seconds:
                deadline = deadline or time.monotonic() + timeout
                if time.monotonic() > deadline:
                    result.errors.append(f"{pending.count()} task(s) unfinished after the stream")
                    break
    finally:
        stop.set()
        sampler.join(timeout=5)
    counts = [n for _, n in samples] or [0]
    result.longest_zero_workers = longest_zero_run(samples)
    result.min_workers = min(counts)
    result.max_workers = max(counts)
    return result
