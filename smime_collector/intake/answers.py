"""Final answers remembered by delivery key (a Mailgun token, an SNS MessageId), for replays.

A provider that did not see our answer (a lost connection, its own retry) sends the same
delivery again, and so can anyone who captured a signed Mailgun request within its five
minutes. Such a repeat gets the answer the first one got, without being judged again.

The memory is a small SQLite file beside the certificates (``<user-certs-dir>/.answers.sqlite3``)
rather than a dictionary per process: gunicorn runs several workers, and a repeat reaches any
of them. SQLite serialises writers across processes with its own file locks, needs no server and
ships with Python. It is bounded in age (:data:`REMEMBER_SECONDS`) and size
(:data:`MAX_REMEMBERED`).

Remembering is an optimisation, never a check: judging is idempotent (the same certificate is
``unchanged``, an older one ``older-than-stored``, a rejection rejects again), so a forgotten or
unreadable entry costs one more judgement and changes no answer. Any SQLite or file error is
logged and the delivery is judged as if it were new.
"""

from __future__ import annotations

import hashlib
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path

from flask import Flask, current_app

from smime_collector.config import Settings
from smime_collector.verdict import Outcome, Reason, Verdict

#: How long a final answer is remembered: longer than any provider retries (Mailgun 8 h).
REMEMBER_SECONDS = 24 * 3600
#: Answers kept at most, oldest dropped first (about 200 bytes each).
MAX_REMEMBERED = 100_000
#: Seconds a worker waits for another worker's write before giving up on remembering.
LOCK_WAIT_SECONDS = 2.0
FILE_NAME = ".answers.sqlite3"
EXTENSION = "smime_collector.answers"

log = logging.getLogger(__name__)

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS answers (door TEXT NOT NULL, key TEXT NOT NULL, "
    "outcome TEXT NOT NULL, reason TEXT NOT NULL, email TEXT, at REAL NOT NULL, "
    "PRIMARY KEY (door, key))",
    "CREATE INDEX IF NOT EXISTS answers_at ON answers (at)",
)


class AnswerMemory:
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

    @classmethod
    def beside(cls, folder: Path) -> AnswerMemory:
        return cls(folder / FILE_NAME)

    def recall(self, door: str, key: str) -> Verdict | None:
        """The final verdict this key got within :attr:`ttl`, if any."""
        try:
            with self._lock:
                row = (
                    self._connection()
                    .execute(
                        "SELECT outcome, reason, email FROM answers "
                        "WHERE door = ? AND key = ? AND at >= ?",
                        (door, _digest(key), self.clock() - self.ttl),
                    )
                    .fetchone()
                )
        except (sqlite3.Error, OSError) as exc:
            log.warning("| answer memory %s unreadable (%s): judging as new", self.path, exc)
            return None
        if row is None:
            return None
        try:
            return Verdict(Outcome(row[0]), Reason(row[1]), row[2])
        except ValueError:  # written by a version with other codes
            return None

    def remember(self, door: str, key: str, verdict: Verdict) -> None:
        """Keep a final verdict; tempfail is never remembered, so a retry is judged again."""
        if not verdict.final:
            return
        now = self.clock()
        try:
            with self._lock:
                db = self._connection()
                with db:
                    db.execute(
                        "INSERT OR REPLACE INTO answers VALUES (?, ?, ?, ?, ?, ?)",
                        (
                            door,
                            _digest(key),
                            verdict.outcome.value,
                            str(verdict.reason),
                            verdict.email,
                            now,
                        ),
                    )
                    db.execute("DELETE FROM answers WHERE at < ?", (now - self.ttl,))
                    db.execute(
                        "DELETE FROM answers WHERE rowid IN (SELECT rowid FROM answers "
                        "ORDER BY at DESC LIMIT -1 OFFSET ?)",
                        (self.limit,),
                    )
        except (sqlite3.Error, OSError) as exc:
            log.warning("| answer memory %s not written (%s)", self.path, exc)

    def _connection(self) -> sqlite3.Connection:
        """One connection per process: a connection inherited over fork must not be used."""
        if self._db is None or self._pid != os.getpid():
            self.path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(
                self.path, timeout=LOCK_WAIT_SECONDS, isolation_level=None, check_same_thread=False
            )
            db.execute("PRAGMA journal_mode=WAL")
            # No fsync per answer: losing the last few to a power cut costs a judgement each.
            db.execute("PRAGMA synchronous=NORMAL")
            for statement in _SCHEMA:
                db.execute(statement)
            db.isolation_level = "DEFERRED"
            self._db, self._pid = db, os.getpid()
        return self._db


def _digest(key: str) -> str:
    """Keys are stored hashed: fixed length whatever the provider sends."""
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()


def install(app: Flask, settings: Settings) -> AnswerMemory:
    """The app's one memory, shared by the doors that deduplicate."""
    return app.extensions.setdefault(EXTENSION, AnswerMemory.beside(settings.user_certs_dir))


def current() -> AnswerMemory:
    return current_app.extensions[EXTENSION]
