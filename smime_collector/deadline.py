"""A per-request time budget that every blocking step (DNS, revocation fetches) draws from.

A relay request must be answered before gunicorn's worker timeout, whatever its messages cost:
an answer after the timeout is a killed worker and a 500, which the relay retries for ever.
Each intake creates one :class:`Deadline` per request; stages ask it how long they may wait.
The clock is injectable so tests never sleep.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field

Clock = Callable[[], float]

#: gunicorn's worker timeout when ``GUNICORN_TIMEOUT`` does not say (as in gunicorn.conf.py).
DEFAULT_WORKER_TIMEOUT = 25.0
#: Seconds kept back from the worker timeout for what follows the last wait: judging a message
#: already under way (each is bounded well below this), writing the answer, logging.
ANSWER_MARGIN_SECONDS = 5.0


def request_budget(environ: dict[str, str] | None = None) -> float:
    """Seconds a relay request may spend, so that it is answered before gunicorn kills the
    worker: the worker timeout less :data:`ANSWER_MARGIN_SECONDS` (half of a short timeout)."""
    raw = (os.environ if environ is None else environ).get("GUNICORN_TIMEOUT", "")
    try:
        timeout = float(raw) if raw.strip() else DEFAULT_WORKER_TIMEOUT
    except ValueError:
        timeout = DEFAULT_WORKER_TIMEOUT  # gunicorn.conf.py refuses it at start-up
    if timeout <= 0:
        timeout = DEFAULT_WORKER_TIMEOUT
    return max(timeout - ANSWER_MARGIN_SECONDS, timeout / 2)


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
