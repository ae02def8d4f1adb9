"""Failed sign-ins at ``/ui``, counted per client in memory every gunicorn worker shares.

Each worker is its own process, so a counter in one worker's memory lets an attacker multiply
their tries by the number of workers. A shared table in a memory mapping the gunicorn master
makes before it forks its workers (:func:`share_between_workers`) costs nothing to run or
deploy; a Redis or database for the count would be a new moving part for a page few people use.
The count starts afresh when the service restarts, which is acceptable for a limit whose job is
to make guessing a long token slow, not to keep a record.

The table is fixed in size: a client is a slot chosen by a keyed hash of its address, so a
flood of addresses can neither grow memory nor pick which slots it collides with; two clients
that share a slot share a count, which can only make the limit stricter.
"""

from __future__ import annotations

import fcntl
import hashlib
import mmap
import os
import secrets
import struct
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

#: Failed sign-ins one client may make per window, and all clients together.
MAX_FAILURES_PER_CLIENT = 10
MAX_FAILURES_TOTAL = 100
WINDOW_SECONDS = 600
#: Slots in the table (plus one for the total): 12 bytes each.
SLOTS = 4096
_SLOT = struct.Struct("<QI")  # window start (seconds), failures in that window


class SignInLimiter:
    """A fixed-window count of failed sign-ins per client and in total."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self._key = secrets.token_bytes(16)
        # An unlinked file: its mapping is shared with every process forked after this, and
        # lockf() locks on it are released by the kernel if a holder dies.
        self._file = tempfile.TemporaryFile(prefix="smime-collector-signin-")
        self._file.truncate(_SLOT.size * (SLOTS + 1))
        self._map = mmap.mmap(self._file.fileno(), _SLOT.size * (SLOTS + 1), mmap.MAP_SHARED)
        self._threads = threading.Lock()  # lockf does not exclude threads of one process

    def admit(self, client: str) -> int:
        """Seconds until ``client`` may try again (0: now, and this try is counted as a
        failure until :meth:`succeeded` says otherwise). Checking and counting are one step,
        so workers answering at the same moment cannot let more tries through than the limit."""
        now = int(self.clock())
        slots = ((self._slot(client), MAX_FAILURES_PER_CLIENT), (SLOTS, MAX_FAILURES_TOTAL))
        with self._locked():
            wait = max(self._wait(index, limit, now) for index, limit in slots)
            if wait:
                return wait
            for index, _limit in slots:
                start, count = self._read(index)
                if now - start >= WINDOW_SECONDS:
                    start, count = now, 0
                self._write(index, start, count + 1)
        return 0

    def succeeded(self, client: str) -> None:
        """The try :meth:`admit` counted was the right token: it was no failure."""
        with self._locked():
            for index in (self._slot(client), SLOTS):
                start, count = self._read(index)
                self._write(index, start, max(count - 1, 0))

    def _wait(self, index: int, limit: int, now: int) -> int:
        start, count = self._read(index)
        if now - start >= WINDOW_SECONDS or count < limit:
            return 0
        return start + WINDOW_SECONDS - now

    def _slot(self, client: str) -> int:
        digest = hashlib.blake2b(client.encode("utf-8", "replace"), key=self._key, digest_size=8)
        return int.from_bytes(digest.digest(), "big") % SLOTS

    def _read(self, index: int) -> tuple[int, int]:
        return _SLOT.unpack_from(self._map, index * _SLOT.size)

    def _write(self, index: int, start: int, count: int) -> None:
        _SLOT.pack_into(self._map, index * _SLOT.size, start, count)

    @contextmanager
    def _locked(self) -> Iterator[None]:
        with self._threads:
            fd = self._file.fileno()
            os.lseek(fd, 0, os.SEEK_SET)
            fcntl.lockf(fd, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.lockf(fd, fcntl.LOCK_UN)


_shared: SignInLimiter | None = None
_own: SignInLimiter | None = None


def share_between_workers() -> None:
    """Make the table now, in the gunicorn master, so every worker forked later uses it."""
    global _shared
    _shared = SignInLimiter()


def limiter() -> SignInLimiter:
    """The workers' shared table, or this process's own outside gunicorn."""
    global _own
    if _shared is not None:
        return _shared
    if _own is None:
        _own = SignInLimiter()
    return _own
