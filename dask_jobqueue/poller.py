"""When to poll: fast while jobs change, slower (doubling) while nothing happens."""

from __future__ import annotations

__all__ = ["PollInterval"]


class PollInterval:
    """The adaptive interval between two status polls.

    Parameters
    ----------
    minimum : float
        Seconds between polls while jobs change state or were just submitted.
    maximum : float
        Upper bound, reached by doubling while nothing changes.
    """

    def __init__(self, minimum: float = 2.0, maximum: float = 30.0):
        self.minimum = minimum
        self.maximum = max(maximum, minimum)
        self.current = minimum

    def after_poll(self, changed: bool) -> float:
        """The wait before the next poll, given whether this one changed anything."""
        self.current = self.minimum if changed else min(self.current * 2, self.maximum)
        return self.current

    def reset(self) -> float:
        """A submission just happened: poll fast again."""
        self.current = self.minimum
        return self.current
