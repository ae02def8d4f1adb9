"""The folder's answer memory: final verdicts by delivery key, in ``<folder>/.answers.sqlite3``.

A replay of a Mailgun request or an SNS notification reaches any gunicorn worker, so the memory
is a file every process on the host opens rather than a dictionary per process. SQLite
serialises writers across processes with its own file locks, needs no server and ships with
Python. The file sits beside the certificates (dot-prefixed, as all of the folder's own state)
because the folder is what one host's workers share; several hosts share a database instead
(``store = postgresql``, whose ``answers`` table does the same job).

Bounded in age (``ttl``) and size (``limit``): every write also drops what expired and what lies
more than ``limit`` rows behind the newest, by rowid, which a newer write always exceeds, so the
bound costs an index range, never a count.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path

from smime_collector.store.base import (
    MAX_REMEMBERED,
    REMEMBER_SECONDS,
    StoreUnavailable,
    answer_key,
    remembered_verdict,
)
from smime_collector.verdict import Verdict

FILE_NAME = ".answers.sqlite3"
#: Seconds a worker waits for another worker's write before giving up on remembering.
LOCK_WAIT_SECONDS = 2.0

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS answers (door TEXT NOT NULL, key TEXT NOT NULL, "
    "outcome TEXT NOT NULL, reason TEXT NOT NULL, email TEXT, at REAL NOT NULL, "
    "PRIMARY KEY (door, key))",
    "CREATE INDEX IF NOT EXISTS answers_at ON answers (at)",
)
_EXISTS = "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'answers'"


class FolderAnswers:
    """Final verdicts by (door, key), shared by every process that opens the same file."""

    def __init__(
        self,
        path: Path,
        *,
        ttl: float = REMEMBER_SECONDS,
        limit: int = MAX_REMEMBERED,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.path = path
        self.ttl = ttl
        self.limit = limit
        self.clock = clock
        self._lock = threading.Lock()
        self._db: sqlite3.Connection | None = None
        self._pid = 0

    def recall(self, door: str, key: str) -> Verdict | None:
        try:
            with self._lock:
                row = (
                    self._connection()
                    .execute(
                        "SELECT outcome, reason, email FROM answers "
                        "WHERE door = ? AND key = ? AND at >= ?",
                        (door, answer_key(key), self.clock() - self.ttl),
                    )
                    .fetchone()
                )
        except (sqlite3.Error, OSError) as exc:
            raise StoreUnavailable(f"answer memory {self.path} unreadable: {exc}") from exc
        return None if row is None else remembered_verdict(*row)

    def remember(self, door: str, key: str, verdict: Verdict) -> None:
        if not verdict.final:
            return
        now = self.clock()
        row = (door, answer_key(key), verdict.outcome.value, str(verdict.reason), verdict.email)
        try:
            with self._lock:
                db = self._connection()
                with db:
                    # REPLACE deletes the old row: the answer gets the newest rowid.
                    cursor = db.execute(
                        "INSERT OR REPLACE INTO answers VALUES (?, ?, ?, ?, ?, ?)", (*row, now)
                    )
                    db.execute(
                        "DELETE FROM answers WHERE rowid <= ? OR at < ?",
                        ((cursor.lastrowid or 0) - self.limit, now - self.ttl),
                    )
        except (sqlite3.Error, OSError) as exc:
            raise StoreUnavailable(f"answer memory {self.path} not written: {exc}") from exc

    def close(self) -> None:
        with self._lock:
            if self._db is not None and self._pid == os.getpid():
                self._db.close()
            self._db = None

    def _connection(self) -> sqlite3.Connection:
        """One connection per process: a connection inherited over fork must not be used.

        Workers open the file at the same moment on their first delivery. Creating the table
        takes the write lock up front (``BEGIN IMMEDIATE``), where SQLite waits for it; the
        switch to WAL is only tried, since SQLite refuses it at once while another process
        holds a lock, and that process switches it instead (the mode is kept in the file;
        until then the default journal is slower, never wrong).
        """
        if self._db is None or self._pid != os.getpid():
            self.path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(
                self.path, timeout=LOCK_WAIT_SECONDS, isolation_level=None, check_same_thread=False
            )
            try:
                # No fsync per answer: losing the last few to a power cut costs a judgement each.
                db.execute("PRAGMA synchronous=NORMAL")
                if not db.execute(_EXISTS).fetchone():
                    db.executescript(f"BEGIN IMMEDIATE; {'; '.join(_SCHEMA)}; COMMIT;")
                if db.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
                    with contextlib.suppress(sqlite3.OperationalError):
                        db.execute("PRAGMA journal_mode=WAL")
            except BaseException:
                db.close()
                raise
            # Each answer takes the write lock when it begins, waiting for it: a transaction
            # that read first could not wait (SQLite would answer "locked" to avoid deadlock).
            db.isolation_level = "IMMEDIATE"
            self._db, self._pid = db, os.getpid()
        return self._db
