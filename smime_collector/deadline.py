"""A per-request time budget that every blocking step (DNS, revocation fetches) draws from.

A relay request must be answered before gunicorn's worker timeout, whatever its messages cost:
an answer after the timeout is a killed worker and a 500, which the relay retries for ever.
Each intake creates one :class:`Deadline` per request; stages ask it how long they may wait.
The clock is injectable so tests never sleep.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

Clock = Callable[[], float]


class DeadlineExceeded(Exception):
    """The request's budget is spent: the message cannot be judged now (``tempfail``)."""


@dataclass
class Deadline:
    """Seconds left until ``end`` on ``clock`` (``time.monotonic`` by default)."""

    end: float
    clock: Clock = field(default=time.monotonic, repr=False)

    @classmethod
    def after(cls, seconds: float, clock: Clock = time.monotonic) -> Deadline:
        return cls(clock() + seconds, clock)

    @classmethod
    def never(cls) -> Deadline:
        """No budget: the CLI judging saved mail may wait as long as each lookup's own timeout."""
        return cls(float("inf"))

    def remaining(self) -> float:
        return max(0.0, self.end - self.clock())

    @property
    def expired(self) -> bool:
        return self.remaining() <= 0.0

    def timeout(self, wanted: float) -> float:
        """The wait a step may use: its own ``wanted`` timeout, cut to what is left.

        Raises :class:`DeadlineExceeded` when nothing is left, so no step starts a wait it
        cannot finish.
        """
        left = self.remaining()
        if left <= 0.0:
            raise DeadlineExceeded("the request's time budget is spent")
        return min(wanted, left)
