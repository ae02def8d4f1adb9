"""The PostgreSQL backend (``store = postgresql``): one truth for several collector hosts.

Tables (``schema.py`` creates and migrates them):

- ``certificates``: keyed by the SHA-256 of the DER bytes, which it holds exactly, with the
  issuer and validity that listings show;
- ``addresses``: each address (lower case) → its current certificate, with a copy of that
  certificate's notAfter so that ``?expiring-within=`` is one index range scan;
- ``history``: append-only (a trigger refuses UPDATE, DELETE and TRUNCATE): replaced, revoked
  and refused-as-older certificates, with when (the database's clock) and why;
- ``answers``: the answer memory for replayed deliveries (Mailgun tokens, SNS MessageIds), so
  that a replay reaching another host gets the answer the first host gave.

No downgrade across hosts: a save locks the address's row (``SELECT ... FOR UPDATE``, or
inserts it) and decides with :func:`supersede` inside that one transaction, so two hosts saving
for one address are serialised by the database. Each process has its own connection pool, made
on first use in that process: gunicorn's workers never share a connection made before fork.

A database that is down or too slow is ``store-error`` (``tempfail``, 503/75). After a failure
the store answers at once for :data:`FAIL_FAST_SECONDS`, so that a batch of messages does not
wait for the database once per message. The next request after that window gets a new pool,
which connects at once: the pool's own reconnection backs off exponentially (up to minutes
after a long outage), and a database that is back must be used at once. The pool checks a
connection that was idle for a second before handing it out, so the first request after a
restart finds a live one, while one under load costs a single round trip per message.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any, ClassVar, Self
from urllib.parse import urlsplit

import psycopg
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from psycopg import sql
from psycopg.rows import TupleRow
from psycopg_pool import ConnectionPool, PoolTimeout

from smime_collector.journal import JournalEntry, JournalPage
from smime_collector.store import schema
from smime_collector.store.base import (
    DEFAULT_RETENTION_DAYS,
    MAX_REMEMBERED,
    REMEMBER_SECONDS,
    Decision,
    Entry,
    HistoryEntry,
    Page,
    Record,
    StoreResult,
    StoreStats,
    StoreUnavailable,
    Why,
    address_problem,
    answer_key,
    normal_address,
    remembered_verdict,
    supersede,
)
from smime_collector.trust import fingerprint
from smime_collector.verdict import Check, Reason, Verdict

log = logging.getLogger(__name__)

#: Seconds to establish one connection.
CONNECT_TIMEOUT = 5
#: Seconds a request waits for a pooled connection before answering ``store-error``.
POOL_WAIT = 5.0
#: Seconds ``/healthz`` and ``--check-config`` wait for one.
HEALTH_WAIT = 2.0
#: Seconds :meth:`PostgresStore.stats` waits for one: every ``/metrics`` scrape asks, and one
#: during an outage must be answered soon (without the store's gauges), not after
#: :data:`POOL_WAIT`. Within :data:`FAIL_FAST_SECONDS` of a failure it does not wait at all.
STATS_WAIT = 1.0
#: Server-side bounds on one statement and on waiting for a row lock, in milliseconds.
STATEMENT_TIMEOUT_MS = 5000
LOCK_TIMEOUT_MS = 5000
#: Milliseconds sent data may stay unacknowledged before the connection counts as dead
#: (a host that vanished, not one that refuses).
TCP_USER_TIMEOUT_MS = 10_000
#: After a database failure, seconds during which operations fail at once without waiting.
FAIL_FAST_SECONDS = 2.0
#: A pooled connection idle longer than this is checked (one empty query) before use: after a
#: database restart it would be dead. Busy connections skip the check and its round trip.
IDLE_CHECK_SECONDS = 1.0
#: Seconds a pool being replaced may take to stop its threads.
POOL_CLOSE_WAIT = 1.0
#: Passes of a save that finds the address inserted, then gone, by other writers meanwhile.
SAVE_ATTEMPTS = 3
#: Seconds between prunings of old verdicts, per process.
PRUNE_EVERY_SECONDS = 600
#: Rows fetched per round trip when streaming every address (``--export``).
DUMP_BATCH = 1000

IS_REVOKED_SQL = "EXISTS (SELECT 1 FROM revoked WHERE address = %s AND sha256 = %s)"
FAST_SQL = f"SELECT (SELECT sha256 FROM addresses WHERE address = %s), {IS_REVOKED_SQL}"
# The row lock on one table, then the certificate in a statement of its own. A writer that waited
# for another gets that row's new version from PostgreSQL's re-check, but a join (or a
# subquery) in the same statement reads with the snapshot taken before the wait: it would miss
# the certificate the other writer inserted, and the row itself with a join.
LOCK_SQL = "SELECT sha256 FROM addresses WHERE address = %s FOR UPDATE"
CERT_SQL = "SELECT der FROM certificates WHERE sha256 = %s"
INSERT_CERT_SQL = (
    "INSERT INTO certificates (sha256, der, issuer, not_before, not_after) "
    "VALUES (%s, %s, %s, %s, %s) ON CONFLICT (sha256) DO NOTHING"
)
INSERT_ADDRESS_SQL = (
    "INSERT INTO addresses (address, sha256, not_after, chain) VALUES (%s, %s, %s, %s) "
    "ON CONFLICT (address) DO NOTHING RETURNING address"
)
UPDATE_ADDRESS_SQL = (
    "UPDATE addresses SET sha256 = %s, not_after = %s, chain = %s, updated_at = now() "
    "WHERE address = %s"
)
INSERT_HISTORY_SQL = (
    "INSERT INTO history (address, sha256, at, why, detail) "
    "VALUES (%s, %s, coalesce(%s, now()), %s, %s)"
)
HISTORY_SQL = (
    "SELECT h.address, h.sha256, h.at, h.why, h.detail, c.der, c.issuer, c.not_before, "
    "c.not_after FROM history h LEFT JOIN certificates c USING (sha256) "
)
NOT_REVOKED = (
    "NOT EXISTS (SELECT 1 FROM revoked r WHERE r.address = a.address AND r.sha256 = a.sha256) "
)
SEARCH_SQL = (
    "SELECT a.address, c.issuer, a.not_after, a.sha256, count(*) OVER () "
    "FROM addresses a JOIN certificates c USING (sha256) WHERE " + NOT_REVOKED + "AND "
    "(%(text)s = '' OR strpos(a.address, %(text)s) > 0 OR strpos(lower(c.issuer), %(text)s) > 0 "
    "OR a.sha256 LIKE %(prefix)s::text) AND (%(before)s::timestamptz IS NULL OR "
    "a.not_after <= %(before)s) ORDER BY a.address OFFSET %(offset)s LIMIT %(limit)s"
)
STATS_SQL = (
    "SELECT count(*), count(*) FILTER (WHERE a.not_after <= %s), min(a.not_after) "
    "FROM addresses a WHERE " + NOT_REVOKED
)
VERDICT_COLUMNS = "at, outcome, reason, email, detail, intake, message_id, request_id, sender"
RECORD_SQL = (
    f"INSERT INTO verdicts ({VERDICT_COLUMNS}) SELECT %s, %s, %s, %s, %s, %s, %s, %s, %s "
    "FROM (SELECT set_config('synchronous_commit', 'off', true)) AS unsynced"
)
PRUNE_SQL = (
    "DELETE FROM verdicts WHERE at < date_trunc('day', %s::timestamptz) - make_interval(days => %s)"
)
VERDICTS_SQL = (
    f"SELECT {VERDICT_COLUMNS} FROM verdicts "
    "WHERE (%(text)s = '' OR strpos(lower(coalesce(email, '')), %(text)s) > 0 "
    "OR strpos(lower(coalesce(sender, '')), %(text)s) > 0) "
    "AND (%(outcome)s = '' OR outcome = %(outcome)s) "
    "ORDER BY at DESC, id DESC OFFSET %(offset)s LIMIT %(limit)s"
)
MARK_REVOKED_SQL = (
    "INSERT INTO revoked (address, sha256, found, detail) "
    "VALUES (%s, %s, coalesce(%s, now()), %s) ON CONFLICT DO NOTHING"
)
RECALL_SQL = "SELECT outcome, reason, email FROM answers WHERE door = %s AND key = %s AND at >= %s"
# One statement: the answer (a key remembered again takes a new id, so it counts as newest),
# then whatever expired or lies more than the limit behind it. Ids only grow, so the rows left
# are at most the limit, whichever hosts wrote them.
REMEMBER_SQL = (
    "SET LOCAL synchronous_commit = off; "
    "WITH kept AS (INSERT INTO answers (door, key, outcome, reason, email, at) VALUES ({}) "
    "ON CONFLICT (door, key) DO UPDATE SET outcome = excluded.outcome, "
    "reason = excluded.reason, email = excluded.email, at = excluded.at, id = excluded.id "
    "RETURNING id) "
    "DELETE FROM answers WHERE id <= (SELECT id FROM kept) - {} OR at < {};"
)
LIST_SQL = (
    "SELECT a.address, c.issuer, a.not_after, a.sha256 "
    "FROM addresses a JOIN certificates c USING (sha256) WHERE " + NOT_REVOKED
)


def safe_url(url: str) -> str:
    """The URL without its password, for messages and logs."""
    try:
        info = psycopg.conninfo.conninfo_to_dict(url)
    except psycopg.Error:  # libpq cannot parse it: connecting will say why
        parts = urlsplit(url)
        return f"{parts.scheme}://{parts.hostname or ''}{parts.path}"
    host = info.get("host", "localhost")
    port = info.get("port", "5432")
    user = f"{info['user']}@" if "user" in info else ""
    return f"postgresql://{user}{host}:{port}/{info.get('dbname', '')}"


class _RecordingConnection(psycopg.Connection[TupleRow]):
    """The connection class of the pool: it remembers, per conninfo, why the last attempt to
    connect failed. The pool only logs that from its own thread, and a request waiting for a
    connection gets "couldn't get a connection after N sec", which does not say whether the
    password, the database name or the server is wrong."""

    failures: ClassVar[dict[str, str]] = {}

    @classmethod
    def connect(cls, conninfo: str = "", **kwargs: Any) -> Self:
        try:
            conn = super().connect(conninfo, **kwargs)
        except psycopg.Error as exc:
            cls.failures[conninfo] = _one_line(exc)  # libpq's messages carry no password
            raise
        cls.failures.pop(conninfo, None)
        return conn


class PostgresStore:
    """Certificates in PostgreSQL; see the module's docstring."""

    kind = "postgresql"

    def __init__(
        self,
        url: str,
        password: str = "",
        pool_size: int = 4,
        retention_days: int = DEFAULT_RETENTION_DAYS,
        *,
        remember_seconds: float = REMEMBER_SECONDS,
        max_remembered: int = MAX_REMEMBERED,
        answer_clock: Callable[[], float] = time.time,
    ) -> None:
        self.url = url
        self.pool_size = pool_size
        self.retention_days = retention_days
        self.remember_seconds = remember_seconds
        self.max_remembered = max_remembered
        self.answer_clock = answer_clock
        self._prune_at = 0.0
        self.description = safe_url(url)
        self._kwargs: dict[str, Any] = {
            "connect_timeout": CONNECT_TIMEOUT,
            "application_name": "smime-collector",
            "options": (
                f"-c statement_timeout={STATEMENT_TIMEOUT_MS} -c lock_timeout={LOCK_TIMEOUT_MS} "
                "-c TimeZone=UTC"
            ),
            "tcp_user_timeout": TCP_USER_TIMEOUT_MS,
        }
        if password:
            self._kwargs["password"] = password
        self._pool_obj: ConnectionPool | None = None
        self._pid = 0
        self._lock = threading.Lock()
        self._schema_pid = 0  # the process that last found the schema current
        self._down_until = 0.0
        self._renew = False  # the pool saw the database fail: replace it on next use
        self._last_error = ""

    # -- connections ----------------------------------------------------------------------

    def _pool(self) -> ConnectionPool:
        """This process's pool, made on first use here (after gunicorn's fork)."""
        if self._pid != os.getpid():
            self._lock = threading.Lock()  # a lock inherited through fork may be held
            self._pool_obj, self._down_until, self._renew = None, 0.0, False
            self._pid = os.getpid()
        with self._lock:
            if self._renew and self._pool_obj is not None:
                old, self._pool_obj, self._renew = self._pool_obj, None, False
                old.close(timeout=POOL_CLOSE_WAIT)
            if self._pool_obj is None:
                pool = ConnectionPool(
                    self.url,
                    connection_class=_RecordingConnection,
                    kwargs={**self._kwargs, "autocommit": True},
                    min_size=1,
                    max_size=self.pool_size,
                    open=False,
                    timeout=POOL_WAIT,
                    check=_check_if_idle,
                    name="smime-collector",
                )
                pool.open(wait=False)
                self._pool_obj = pool
            return self._pool_obj

    @contextmanager
    def _connection(self, wait: float = POOL_WAIT) -> Iterator[psycopg.Connection[TupleRow]]:
        """A live connection with the schema in place; :class:`StoreUnavailable` otherwise."""
        if time.monotonic() < self._down_until:
            raise StoreUnavailable(f"{self.description}: {self._last_error} (retry shortly)")
        try:
            with self._pool().connection(timeout=wait) as conn:
                try:
                    if self._schema_pid != os.getpid():  # the database was down at start-up
                        schema.migrate(conn)
                        self._schema_pid = os.getpid()
                    yield conn
                finally:
                    # For _check_if_idle. Not the pool's reset hook: a pool with one hands every
                    # returned connection to its worker thread, a thread switch per checkout.
                    conn._smime_returned = time.monotonic()  # type: ignore[attr-defined]
        except psycopg.Error as exc:
            self._last_error = self._why(exc)
            if isinstance(exc, psycopg.OperationalError):
                self._down_until = time.monotonic() + FAIL_FAST_SECONDS
                self._renew = True
            raise StoreUnavailable(f"{self.description}: {self._last_error}") from exc

    def _why(self, exc: psycopg.Error) -> str:
        """One line saying why; for a pool that timed out, led by why its last attempt to
        connect failed (authentication, a refused connection, an unknown database)."""
        text = _one_line(exc)
        cause = _RecordingConnection.failures.get(self.url)
        if isinstance(exc, PoolTimeout) and cause:
            return f"{cause} ({text})"
        return text

    def close(self) -> None:
        if self._pool_obj is not None and self._pid == os.getpid():
            self._pool_obj.close()
        self._pool_obj = None

    def prepare(self) -> None:
        """Create or migrate the schema now, under the advisory lock (gunicorn's start-up
        check, the CLI); with a connection of its own, so that no pool exists before fork."""
        try:
            with psycopg.connect(self.url, **self._kwargs, autocommit=True) as conn:
                schema.migrate(conn)
            self._schema_pid = os.getpid()
        except psycopg.Error as exc:
            raise StoreUnavailable(f"{self.description}: {_one_line(exc)}") from exc

    # -- the CertStore interface ----------------------------------------------------------

    def unsafe(self, address: str) -> str | None:
        return address_problem(address)

    def location(self, address: str) -> str:
        return f"postgresql:{address.lower()}"

    def get(self, address: str) -> x509.Certificate | None:
        der = self.get_der(address)
        return None if der is None else x509.load_der_x509_certificate(der)

    def get_der(self, address: str) -> bytes | None:
        address = normal_address(address)
        if not address or address_problem(address):
            return None
        with self._connection() as conn:
            row = conn.execute(
                "SELECT c.der FROM addresses a JOIN certificates c USING (sha256) "
                "WHERE a.address = %s",
                (address,),
            ).fetchone()
        return None if row is None else bytes(row[0])

    def addresses(self) -> list[str]:
        with self._connection() as conn:
            rows = conn.execute("SELECT address FROM addresses ORDER BY address").fetchall()
        return [row[0] for row in rows]

    def chain(self, address: str) -> list[bytes]:
        address = normal_address(address)
        if not address or address_problem(address):
            return []
        with self._connection() as conn:
            row = conn.execute(
                "SELECT chain FROM addresses WHERE address = %s", (address,)
            ).fetchone()
        return [] if row is None else [bytes(der) for der in row[0]]

    def is_revoked(self, address: str, cert: x509.Certificate) -> bool:
        with self._connection() as conn:
            row = conn.execute(
                f"SELECT {IS_REVOKED_SQL}", (normal_address(address), fingerprint(cert))
            ).fetchone()
        return bool(row and row[0])

    def mark_revoked(self, address: str, cert: x509.Certificate, detail: str) -> None:
        with self._connection() as conn:
            conn.execute(MARK_REVOKED_SQL, (address.lower(), fingerprint(cert), None, detail))

    def retire_revoked(self, address: str, cert: x509.Certificate, detail: str) -> bool:
        """Mark, move into the history and drop the address's row, in one transaction;
        False when the address holds another certificate now or the database is away."""
        address, sha256 = address.lower(), fingerprint(cert)
        try:
            with self._connection() as conn, conn.transaction():
                row = conn.execute(LOCK_SQL, (address,)).fetchone()
                if row is None or row[0] != sha256:
                    return False
                conn.execute(MARK_REVOKED_SQL, (address, sha256, None, detail))
                conn.execute(INSERT_HISTORY_SQL, (address, sha256, None, Why.REVOKED.value, detail))
                conn.execute("DELETE FROM addresses WHERE address = %s", (address,))
                return True
        except StoreUnavailable as exc:
            log.warning("cannot retire %s: %s", address, exc)
            return False

    def save(
        self,
        address: str,
        cert: x509.Certificate,
        current_revoked: bool = False,
        der: bytes | None = None,
        chain: Sequence[bytes] | None = None,
    ) -> StoreResult:
        problem = address_problem(address)
        if problem:
            return StoreResult(Check.fail(Reason.UNSAFE_ADDRESS, problem))
        address = address.lower()
        try:
            with self._connection() as conn:
                return self._save(
                    conn, address, cert, current_revoked, der or _der(cert), list(chain or [])
                )
        except StoreUnavailable as exc:
            return StoreResult(Check.retry(Reason.STORE_ERROR, f"cannot store: {exc}"))

    def _save(
        self,
        conn: psycopg.Connection[TupleRow],
        address: str,
        cert: x509.Certificate,
        current_revoked: bool,
        der: bytes,
        chain: list[bytes],
    ) -> StoreResult:
        where = self.location(address)
        sha256 = fingerprint(cert)
        current_sha256, revoked = conn.execute(FAST_SQL, (address, address, sha256)).fetchone()
        if revoked:
            return StoreResult(
                Check.fail(Reason.REVOKED, "this certificate was found revoked earlier")
            )
        if current_sha256 == sha256:
            # supersede()'s answer for an identical certificate, read without a lock: the
            # message that finds its certificate in place needs one round trip, not five.
            return StoreResult(Check.passed("the same certificate is already stored"), False, where)
        not_after = cert.not_valid_after_utc
        with conn.transaction():
            conn.execute(INSERT_CERT_SQL, _certificate_row(sha256, der, cert))
            for _attempt in range(SAVE_ATTEMPTS):
                current = self._locked_current(conn, address)
                decision, why = supersede(current, cert, current_revoked)
                if decision is Decision.UNCHANGED:
                    return StoreResult(Check.passed(why), False, where)
                if decision is Decision.REFUSE_OLDER:
                    history = (address, sha256, None, Why.REFUSED_OLDER.value, why)
                    conn.execute(INSERT_HISTORY_SQL, history)
                    return StoreResult(Check.fail(Reason.OLDER_THAN_STORED, why))
                if current is not None:
                    kind = Why.REVOKED if current_revoked else Why.REPLACED
                    history = (address, fingerprint(current), None, kind.value, why)
                    conn.execute(INSERT_HISTORY_SQL, history)
                    conn.execute(UPDATE_ADDRESS_SQL, (sha256, not_after, chain, address))
                    break
                if conn.execute(INSERT_ADDRESS_SQL, (address, sha256, not_after, chain)).fetchone():
                    break
                # Another writer inserted the address since we looked: decide against its
                # row, which the next pass locks.
            else:
                raise StoreUnavailable(f"{address} kept changing under this save; retry")
        return StoreResult(Check.passed("stored"), True, where, len(der))

    @staticmethod
    def _locked_current(
        conn: psycopg.Connection[TupleRow], address: str
    ) -> x509.Certificate | None:
        """The address's current certificate, its row locked until the transaction ends."""
        row = conn.execute(LOCK_SQL, (address,)).fetchone()
        if row is None:
            return None
        cert = conn.execute(CERT_SQL, (row[0],)).fetchone()
        if cert is None:  # the schema's foreign key makes this impossible
            raise StoreUnavailable(f"{address}: certificate {row[0]} is missing")
        return x509.load_der_x509_certificate(cert[0])

    def list(self, expiring_before: datetime | None = None) -> list[Entry]:
        sql, args = LIST_SQL, ()
        if expiring_before is not None:
            sql, args = sql + "AND a.not_after <= %s ", (expiring_before,)
        with self._connection() as conn:
            rows = conn.execute(sql + "ORDER BY a.address", args).fetchall()
        return [Entry(*row) for row in rows]

    def search(
        self,
        text: str = "",
        offset: int = 0,
        limit: int = 50,
        expiring_before: datetime | None = None,
    ) -> Page:
        """:func:`matches` in SQL: one page, and the number of matches, in one statement."""
        needle = text.strip().lower()
        prefix = needle.replace(":", "")
        hexadecimal = all(ch in "0123456789abcdef" for ch in prefix)
        args = {
            "text": needle,
            "prefix": prefix + "%" if hexadecimal else None,  # a fingerprint is hex only
            "before": expiring_before,
            "offset": offset,
            "limit": limit,
        }
        with self._connection() as conn:
            rows = conn.execute(SEARCH_SQL, args).fetchall()
        if not rows and offset:  # past the end: the count comes from the first page
            return Page([], self.search(text, 0, 1, expiring_before).total, offset, limit)
        total = rows[0][4] if rows else 0
        return Page([Entry(*row[:4]) for row in rows], total, offset, limit)

    def stats(self, expiring_before: datetime | None = None) -> StoreStats:
        with self._connection(wait=STATS_WAIT) as conn:
            row = conn.execute(STATS_SQL, (expiring_before,)).fetchone()
        count, expiring, earliest = row if row else (0, 0, None)
        return StoreStats(count, expiring if expiring_before is not None else 0, earliest)

    # -- the verdict journal --------------------------------------------------------------

    def record(self, entry: JournalEntry) -> None:
        """One prepared INSERT that turns ``synchronous_commit`` off for its own transaction:
        like the folder's journal, a crash may lose its last moments, and no message waits for
        the disk to keep a record for people. The record is in the table before the message is
        answered, so any host (or ``psql``) sees it at once. Records older than
        ``verdict-retention-days`` are pruned now and then."""
        values = (
            entry.at,
            entry.outcome,
            entry.reason,
            entry.email,
            entry.detail,
            entry.intake,
            entry.message_id,
            entry.request_id,
            entry.sender,
        )
        with self._connection() as conn:
            conn.execute(RECORD_SQL, values)
            if time.monotonic() >= self._prune_at:
                self._prune_at = time.monotonic() + PRUNE_EVERY_SECONDS
                conn.execute(PRUNE_SQL, (entry.at, self.retention_days))

    def verdicts(
        self, text: str = "", outcome: str = "", offset: int = 0, limit: int = 50
    ) -> JournalPage:
        args = {
            "text": text.strip().lower(),
            "outcome": outcome,
            "offset": offset,
            "limit": limit + 1,
        }
        with self._connection() as conn:
            rows = conn.execute(VERDICTS_SQL, args).fetchall()
        entries = [JournalEntry(*row) for row in rows[:limit]]
        return JournalPage(entries, offset, limit, len(rows) > limit)

    def verdict_counts(self, since: datetime) -> Counter[tuple[str, str]]:
        with self._connection() as conn:
            rows = conn.execute(
                "SELECT outcome, reason, count(*) FROM verdicts WHERE at >= %s "
                "GROUP BY outcome, reason",
                (since,),
            ).fetchall()
        return Counter({(outcome, reason): count for outcome, reason, count in rows})

    # -- the answer memory ----------------------------------------------------------------

    def recall_answer(self, door: str, key: str) -> Verdict | None:
        oldest = self._answer_time(-self.remember_seconds)
        with self._connection() as conn:
            row = conn.execute(RECALL_SQL, (door, answer_key(key), oldest)).fetchone()
        return None if row is None else remembered_verdict(*row)

    def remember_answer(self, door: str, key: str, verdict: Verdict) -> None:
        """Written without waiting for the disk, as the verdict journal: other hosts see it as
        soon as it commits, and a crash that loses it costs one more judgement."""
        if not verdict.final:
            return
        values = [
            door,
            answer_key(key),
            verdict.outcome.value,
            str(verdict.reason),
            verdict.email,
            self._answer_time(0),
        ]
        statement = sql.SQL(REMEMBER_SQL).format(
            sql.SQL(", ").join(map(sql.Literal, values)),
            sql.Literal(self.max_remembered),
            sql.Literal(self._answer_time(-self.remember_seconds)),
        )
        with self._connection() as conn:
            conn.execute(statement)  # no parameters: one simple query, one transaction

    def _answer_time(self, offset: float) -> datetime:
        """This host's clock (hosts keep theirs in sync far better than the 24 h that matter)."""
        return datetime.fromtimestamp(self.answer_clock() + offset, UTC)

    def history(self, address: str) -> list[HistoryEntry]:
        address = normal_address(address)
        if not address or address_problem(address):
            return []
        with self._connection() as conn:
            rows = conn.execute(
                HISTORY_SQL + "WHERE h.address = %s ORDER BY h.at DESC, h.id DESC", (address,)
            ).fetchall()
        return [_history_entry(row) for row in rows]

    def dump(self) -> Iterator[Record]:
        """Two streams in address order (one snapshot), merged."""
        with self._connection() as conn, conn.transaction():
            conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
            current = conn.cursor(name="dump_current")
            current.itersize = DUMP_BATCH
            current.execute(
                "SELECT a.address, c.der, a.chain FROM addresses a "
                "JOIN certificates c USING (sha256) ORDER BY a.address"
            )
            history = conn.cursor(name="dump_history")
            history.itersize = DUMP_BATCH
            history.execute(HISTORY_SQL + "ORDER BY h.address, h.at, h.id")
            yield from _merge(current, history)

    def restore_history(self, address: str, entries: Iterable[HistoryEntry]) -> int:
        address = address.lower()
        if address_problem(address):
            return 0
        entries = list(entries)
        with self._connection() as conn, conn.transaction():
            # One restorer per address at a time, so that "already recorded" stays true.
            conn.execute(
                "SELECT pg_advisory_xact_lock(%s, hashtext(%s))", (schema.LOCK_KEY, address)
            )
            seen = {
                _history_entry(row).key
                for row in conn.execute(HISTORY_SQL + "WHERE h.address = %s", (address,))
            }
            added = 0
            for entry in entries:
                if entry.key in seen:
                    continue
                seen.add(entry.key)
                if entry.der is not None:
                    cert = x509.load_der_x509_certificate(entry.der)
                    conn.execute(INSERT_CERT_SQL, _certificate_row(entry.sha256, entry.der, cert))
                conn.execute(
                    INSERT_HISTORY_SQL,
                    (address, entry.sha256, entry.at, str(entry.event), entry.detail),
                )
                if entry.event == Why.REVOKED:  # found revoked: never stored again here either
                    conn.execute(MARK_REVOKED_SQL, (address, entry.sha256, entry.at, entry.detail))
                added += 1
            return added

    def health(self) -> Check:
        """Reachable, writable (not a standby), and a schema this version understands."""
        try:
            with self._connection(wait=HEALTH_WAIT) as conn:
                recovery, read_only, version = conn.execute(
                    "SELECT pg_is_in_recovery(), current_setting('transaction_read_only'), "
                    "(SELECT max(version) FROM schema_version)"
                ).fetchone()
        except StoreUnavailable as exc:
            return Check.retry(Reason.STORE_ERROR, str(exc))
        if recovery or read_only == "on":
            return Check.retry(Reason.STORE_ERROR, f"{self.description} is read-only (a standby?)")
        return Check.passed(f"{self.description} is writable (schema version {version})")


def _check_if_idle(conn: psycopg.Connection[TupleRow]) -> None:
    """The pool's ``check`` hook: probe only connections that sat idle (see
    :data:`IDLE_CHECK_SECONDS`); a dead one raises, and the pool replaces it."""
    returned = getattr(conn, "_smime_returned", 0.0)
    if time.monotonic() - returned > IDLE_CHECK_SECONDS:
        ConnectionPool.check_connection(conn)


def _merge(
    current: Iterable[tuple[str, bytes, list[bytes]]], history: Iterable[tuple[Any, ...]]
) -> Iterator[Record]:
    """Records from two streams sorted by address: current certificates and history rows."""
    cur_iter, hist_iter = iter(current), iter(history)
    cur = next(cur_iter, None)
    hist = next(hist_iter, None)
    while cur is not None or hist is not None:
        address = min(x[0] for x in (cur, hist) if x is not None)
        der, chain = None, []
        if cur is not None and cur[0] == address:
            der, chain = bytes(cur[1]), [bytes(issuer) for issuer in cur[2]]
            cur = next(cur_iter, None)
        entries = []
        while hist is not None and hist[0] == address:
            entries.append(_history_entry(hist))
            hist = next(hist_iter, None)
        yield Record(address, der, entries, chain)


def _history_entry(row: tuple[Any, ...]) -> HistoryEntry:
    _address, sha256, at, why, detail, der, issuer, not_before, not_after = row
    return HistoryEntry(
        sha256,
        issuer or "",
        not_before,
        not_after,
        Why(why),
        at,
        detail,
        None if der is None else bytes(der),
    )


def _certificate_row(sha256: str, der: bytes, cert: x509.Certificate) -> tuple[Any, ...]:
    """The values of :data:`INSERT_CERT_SQL` for one certificate."""
    return (
        sha256,
        der,
        cert.issuer.rfc4514_string(),
        cert.not_valid_before_utc,
        cert.not_valid_after_utc,
    )


def _der(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.DER)


def _one_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__
