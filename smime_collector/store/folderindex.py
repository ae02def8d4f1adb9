"""The folder's sidecar index: listings without reading every certificate file.

``<folder>/.index/certs.sqlite`` holds one row per ``<address>.crt``: the file's identity
(inode, mtime, size) and what listings show (issuer, notAfter, SHA-256). The store updates a
row under the address's lock right after writing the file. The files stay the truth: the index
is a cache, checked before each listing and brought up to date from the files, never the other
way round, so a lost or damaged index costs one rebuild and nothing else.

How a listing knows the index matches the files, without a ``stat`` per file each time (100,000
of them take about 0.3 s here):

- Adding, removing or renaming a file changes the folder's mtime. The index records the mtime
  it last reconciled against; a different one means: list the folder's names and inode numbers
  (``getdents``, no ``stat``), and parse only files whose name or inode the index does not know.
  Every write of the store is a rename, so it changes the inode too; the store records its own
  write with the folder's mtime just before and after it, so its writes alone do not make the
  next listing scan. (The index lives in ``.index/`` so that its own files do not touch the
  folder's mtime.)
- An edit in place (``cp`` over an existing file) changes neither. Every
  :data:`FULL_CHECK_SECONDS` a listing also compares mtime and size of every file; this also
  bounds how long a change made by hand in the same instant as one of the store's writes can
  go unseen.
- An mtime within :data:`RACY_NS` of the reconciliation is not trusted: the kernel's clock is
  coarse, so a change in the same tick would leave the mtime as it was (git's "racily clean").
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeVar

from cryptography import x509

from smime_collector.store.base import Entry, StoreStats
from smime_collector.trust import CORRUPT_CERTIFICATE, fingerprint

log = logging.getLogger(__name__)

INDEX_DIR = ".index"
#: Where the store keeps the certificates it replaced, and the markers of revoked ones.
HISTORY = ".history"
REVOKED_SUFFIX = ".revoked"
INDEX_FILE = "certs.sqlite"
#: Bumped whenever the index's tables change: an index of another version is rebuilt.
INDEX_VERSION = 1
#: How often a listing also compares every file's mtime and size (edits in place).
FULL_CHECK_SECONDS = 300
#: An mtime this close to the reconciliation may hide a change made in the same clock tick.
RACY_NS = 1_000_000_000
#: Rows written per transaction while reconciling.
RECONCILE_BATCH = 2000
#: How long a writer waits for another process's index transaction.
BUSY_TIMEOUT_MS = 10_000

Signature = tuple[int, int, int]  # inode, mtime_ns, size

SCHEMA = """
CREATE TABLE current (
    address TEXT PRIMARY KEY,
    inode INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    size INTEGER NOT NULL,
    issuer TEXT,            -- NULL: the file is not a certificate; listed never, parsed once
    not_after INTEGER,      -- seconds since the epoch, UTC
    sha256 TEXT,
    revoked INTEGER NOT NULL DEFAULT 0  -- found revoked (a marker in .history/): never listed
) WITHOUT ROWID;
CREATE INDEX current_not_after ON current (not_after);
CREATE TABLE state (
    name TEXT PRIMARY KEY,
    value INTEGER
);
"""
UPSERT = "INSERT OR REPLACE INTO current VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
T = TypeVar("T")


class IndexUnusable(Exception):
    """The index cannot be opened or written (read-only folder ...): list from the files."""


class FolderIndex:
    """The sidecar index of one certificate folder."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.path = folder / INDEX_DIR / INDEX_FILE

    # -- connections --------------------------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        """A connection for one operation. None is kept open in between: an open file would
        keep the folder's file system from being remounted read-only, and no connection can
        then cross a fork."""
        (self.folder / INDEX_DIR).mkdir(exist_ok=True)
        db = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None)
        try:
            # A cache of the files: losing the last transactions to a crash costs a re-parse
            # of those files, so the index never waits for fsync.
            db.execute("PRAGMA synchronous=OFF")
            if db.execute("PRAGMA user_version").fetchone()[0] != INDEX_VERSION:
                # A rollback journal, not WAL: nothing beside the file between operations.
                db.execute("PRAGMA journal_mode=DELETE")
                db.executescript(
                    "BEGIN IMMEDIATE; DROP TABLE IF EXISTS current; DROP TABLE IF EXISTS state;"
                    f"{SCHEMA} PRAGMA user_version={INDEX_VERSION}; COMMIT;"
                )
        except BaseException:
            db.close()
            raise
        return db

    def _run(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """``work`` on a fresh connection; a damaged index file is deleted and built afresh,
        once. :class:`IndexUnusable` when the index cannot be used at all."""
        for attempt in (1, 2):
            try:
                db = self._connect()
                try:
                    return work(db)
                finally:
                    db.close()
            except sqlite3.OperationalError as exc:  # locked too long, read-only, disk full
                raise IndexUnusable(f"{self.path}: {exc}") from exc
            except sqlite3.DatabaseError as exc:  # not a database, malformed
                if attempt == 2:
                    raise IndexUnusable(f"{self.path}: {exc}") from exc
                log.warning("certificate index %s is damaged (%s): rebuilding it", self.path, exc)
                self._discard()
            except OSError as exc:
                raise IndexUnusable(f"{self.path}: {exc}") from exc
        raise AssertionError("unreachable")

    def _discard(self) -> None:
        for suffix in ("", "-journal", "-wal", "-shm"):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(f"{self.path}{suffix}")

    def close(self) -> None:
        """Nothing stays open between operations; kept for the store's ``close()``."""

    # -- writes by the store --------------------------------------------------------------

    def record(
        self,
        address: str,
        cert: x509.Certificate,
        st: os.stat_result,
        folder_before: int,
        folder_after: int,
    ) -> None:
        """The store has just written ``<address>.crt`` (``st`` is its stat; the folder's mtime
        was ``folder_before`` just before the rename and ``folder_after`` just after): keep in
        step. When the index was current before this write, it stays current after it, so the
        next listing need not scan the folder. Best effort: a failure only means the next
        listing re-reads the folder."""
        row = (address, *_signature(st), *_columns(cert), 0)  # the store refuses revoked ones

        def work(db: sqlite3.Connection) -> None:
            with _writing(db):
                db.execute(UPSERT, row)
                db.execute(
                    "UPDATE state SET value = ? WHERE name = 'folder_mtime_ns' AND value = ?",
                    (folder_after, folder_before),
                )

        try:
            self._run(work)
        except IndexUnusable as exc:
            log.debug("certificate index not updated for %s: %s", address, exc)

    def mark_revoked(self, address: str, sha256: str) -> None:
        """A certificate was found revoked: never list it, even while it is still in place."""
        sql = "UPDATE current SET revoked = 1 WHERE address = ? AND sha256 = ?"
        try:
            self._run(lambda db: db.execute(sql, (address, sha256)))
        except IndexUnusable as exc:
            log.debug("certificate index not updated for %s: %s", address, exc)

    # -- listings -----------------------------------------------------------------------------

    def entries(self, expiring_before: datetime | None) -> list[Entry]:
        """Current certificates from the index, reconciled with the files first."""
        sql = "SELECT address, issuer, not_after, sha256 FROM current "
        sql += "WHERE issuer IS NOT NULL AND revoked = 0 "
        args: tuple[int, ...] = ()
        if expiring_before is not None:
            sql += "AND not_after <= ? "
            args = (int(expiring_before.timestamp()),)

        def query(db: sqlite3.Connection) -> list[tuple[str, str, int, str]]:
            self._reconcile(db)
            return db.execute(sql + "ORDER BY address", args).fetchall()

        rows = self._run(query)
        at = datetime.fromtimestamp
        return [Entry(a, issuer, at(na, UTC), sha) for a, issuer, na, sha in rows]

    def stats(self, expiring_before: datetime | None) -> StoreStats:
        """Count, how many expire by ``expiring_before``, and the earliest notAfter: one
        aggregate over the index, cheap enough for every ``/metrics`` scrape."""
        cutoff = None if expiring_before is None else int(expiring_before.timestamp())

        def query(db: sqlite3.Connection) -> tuple[int, int | None, int | None]:
            self._reconcile(db)
            return db.execute(
                "SELECT count(*), sum(not_after <= ?), min(not_after) FROM current "
                "WHERE issuer IS NOT NULL AND revoked = 0",
                (cutoff,),
            ).fetchone()

        count, expiring, earliest = self._run(query)
        first = None if earliest is None else datetime.fromtimestamp(earliest, UTC)
        return StoreStats(count, expiring or 0, first)

    def _reconcile(self, db: sqlite3.Connection) -> None:
        """Bring the index up to date with the files, parsing only those that changed.

        Files are parsed outside any transaction and their rows written
        :data:`RECONCILE_BATCH` at a time, so writers are never kept waiting long and a
        first build of a big folder cut short (a worker timeout) keeps what it did. The folder
        mtime recorded is the one seen before the scan: a write during it shows next time.
        """
        started = time.time_ns()
        folder_mtime = os.stat(self.folder).st_mtime_ns
        state = dict(db.execute("SELECT name, value FROM state").fetchall())
        full = started - (state.get("full_check_ns") or 0) > FULL_CHECK_SECONDS * 1e9
        if not full and state.get("folder_mtime_ns") == folder_mtime:
            return
        # Sets of tuples, compared in C: 100,000 files take a fraction of a second.
        columns = "address, inode, mtime_ns, size" if full else "address, inode"
        on_disk = _scan(self.folder, with_stat=full)
        known = set(db.execute(f"SELECT {columns} FROM current"))
        gone = [(a,) for a in {k[0] for k in known} - {d[0] for d in on_disk}]
        changed = [d[0] for d in on_disk - known]
        with _writing(db):
            db.executemany("DELETE FROM current WHERE address = ?", gone)
        for first in range(0, len(changed), RECONCILE_BATCH):
            batch = changed[first : first + RECONCILE_BATCH]
            rows = [row for a in batch if (row := self._read_row(a)) is not None]
            with _writing(db):
                db.executemany(UPSERT, rows)
        if full:
            self._refresh_revoked(db)
        trusted = folder_mtime if started - folder_mtime > RACY_NS else None
        with _writing(db):
            db.execute("INSERT OR REPLACE INTO state VALUES ('folder_mtime_ns', ?)", (trusted,))
            if full:
                db.execute("INSERT OR REPLACE INTO state VALUES ('full_check_ns', ?)", (started,))
        if gone or changed:
            log.info(
                "certificate index %s: %d files parsed, %d gone", self.path, len(changed), len(gone)
            )

    def _refresh_revoked(self, db: sqlite3.Connection) -> None:
        """Markers added or removed by hand: the store's own go through :meth:`mark_revoked`,
        and a changed file is checked for its marker when it is parsed."""
        try:
            markers = {n for n in os.listdir(self.folder / HISTORY) if n.endswith(REVOKED_SUFFIX)}
        except FileNotFoundError:
            markers = set()
        rows = db.execute("SELECT address, sha256, revoked FROM current WHERE sha256 IS NOT NULL")
        changes = [
            (int(now), address)
            for address, sha256, was in rows
            if (now := marker_name(address, sha256) in markers) != bool(was)
        ]
        with _writing(db):
            db.executemany("UPDATE current SET revoked = ? WHERE address = ?", changes)

    def _read_row(self, address: str) -> tuple[object, ...] | None:
        """A row for ``<address>.crt`` as it is now; ``None`` when it vanished meanwhile."""
        path = self.folder / f"{address}.crt"
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
        except OSError:
            return None
        with os.fdopen(fd, "rb") as handle:
            st = os.fstat(handle.fileno())
            data = handle.read()
        try:
            columns = _columns(x509.load_pem_x509_certificate(data))
        except CORRUPT_CERTIFICATE:
            return (address, *_signature(st), None, None, None, 0)
        marker = self.folder / HISTORY / marker_name(address, str(columns[2]))
        return (address, *_signature(st), *columns, int(marker.exists()))


def marker_name(address: str, sha256: str) -> str:
    """The name, in :data:`HISTORY`, of the marker saying ``address``'s certificate ``sha256``
    was found revoked."""
    return f"{address}.{sha256}{REVOKED_SUFFIX}"


def _scan(folder: Path, with_stat: bool) -> set[tuple[str, ...]]:
    """``(address, inode)`` of each regular ``<address>.crt``, plus mtime and size
    ``with_stat`` (the inode alone comes free with the folder's listing; the rest costs a
    ``stat`` per file)."""
    found: set[tuple[str, ...]] = set()
    add = found.add
    with os.scandir(folder) as it:
        for entry in it:
            name = entry.name
            if name[0] == "." or not name.endswith(".crt"):
                continue
            if not entry.is_file(follow_symlinks=False):
                continue
            if not with_stat:
                add((name[:-4], entry.inode()))
                continue
            try:
                st = entry.stat(follow_symlinks=False)
            except FileNotFoundError:
                continue
            add((name[:-4], st.st_ino, st.st_mtime_ns, st.st_size))
    return found


@contextlib.contextmanager
def _writing(db: sqlite3.Connection) -> Iterator[None]:
    """One short write transaction."""
    db.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")


def _signature(st: os.stat_result) -> Signature:
    return st.st_ino, st.st_mtime_ns, st.st_size


def _columns(cert: x509.Certificate) -> tuple[str, int, str]:
    return (
        cert.issuer.rfc4514_string(),
        int(cert.not_valid_after_utc.timestamp()),
        fingerprint(cert),
    )
