"""Waiting in tests: the one wait-until helper and the one fast-polling setting."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_until(predicate: Callable[[], T], timeout: float = 30.0, interval: float = 0.25) -> T:
    """Call ``predicate`` every ``interval`` seconds until it returns a true value or
    ``timeout`` seconds have passed; return its last value (``assert wait_until(...)``)."""
    deadline = time.monotonic() + timeout
    value = predicate()
    while not value and time.monotonic() < deadline:
        time.sleep(interval)
        value = predicate()
    return value


def quick_polling(name: str, interval: str = "300ms", most: str = "1s", **settings: str) -> dict:
    """Settings making the engine of section ``jobqueue.<name>`` poll and resubmit quickly;
    ``settings`` sets other keys of the section (``vanish_grace="4s"``)."""
    return {
        f"jobqueue.{name}.poll-interval": interval,
        f"jobqueue.{name}.poll-interval-max": most,
        f"jobqueue.{name}.resubmit-backoff": interval,
        **{f"jobqueue.{name}.{key.replace('_', '-')}": value for key, value in settings.items()},
    }
