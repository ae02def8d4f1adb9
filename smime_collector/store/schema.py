"""The PostgreSQL schema, created and migrated idempotently under an advisory lock.

Every process that opens the store (gunicorn's master at start-up, each worker on first use,
the CLI) runs :func:`migrate`: it takes a transaction-level advisory lock, so that hosts
starting together apply each step once, reads ``schema_version`` and applies the steps it lacks,
all in one transaction (PostgreSQL's DDL is transactional: a failed step leaves nothing half
done). A database whose schema is newer than this code is refused rather than written, so an
old host cannot damage data a newer one relies on during a rolling upgrade.
"""

from __future__ import annotations

import psycopg
from psycopg.rows import TupleRow

#: The advisory lock's first key: "smim" in ASCII.
LOCK_KEY = 0x736D696D

#: Steps in order; step ``n`` brings the schema to version ``n``. Append, never edit.
STEPS: tuple[str, ...] = (
    """
    CREATE TABLE certificates (
        sha256 text PRIMARY KEY CHECK (sha256 ~ '^[0-9a-f]{64}$'),
        der bytea NOT NULL,
        issuer text NOT NULL,
        not_before timestamptz NOT NULL,
        not_after timestamptz NOT NULL,
        first_seen timestamptz NOT NULL DEFAULT now()
    );
    CREATE TABLE addresses (
        address text COLLATE "C" PRIMARY KEY,
        sha256 text NOT NULL REFERENCES certificates,
        not_after timestamptz NOT NULL,
        chain bytea[] NOT NULL DEFAULT '{}',
        updated_at timestamptz NOT NULL DEFAULT now()
    );
    CREATE INDEX addresses_not_after ON addresses (not_after);
    CREATE TABLE history (
        id bigserial PRIMARY KEY,
        address text COLLATE "C" NOT NULL,
        sha256 text NOT NULL,
        at timestamptz NOT NULL DEFAULT now(),
        why text NOT NULL CHECK (why IN ('replaced', 'revoked', 'refused-older')),
        detail text NOT NULL DEFAULT ''
    );
    CREATE INDEX history_address ON history (address, at, id);
    CREATE TABLE verdicts (
        id bigserial PRIMARY KEY,
        at timestamptz NOT NULL,
        outcome text NOT NULL,
        reason text NOT NULL,
        email text,
        detail text NOT NULL DEFAULT '',
        intake text NOT NULL DEFAULT '',
        message_id text,
        request_id text NOT NULL DEFAULT '-',
        sender text
    );
    CREATE INDEX verdicts_at ON verdicts (at);
    CREATE TABLE revoked (
        address text COLLATE "C" NOT NULL,
        sha256 text NOT NULL,
        found timestamptz NOT NULL DEFAULT now(),
        detail text NOT NULL DEFAULT '',
        PRIMARY KEY (address, sha256)
    );
    CREATE FUNCTION history_is_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        RAISE EXCEPTION 'history is append-only';
    END $$;
    CREATE TRIGGER history_append_only BEFORE UPDATE OR DELETE OR TRUNCATE ON history
        FOR EACH STATEMENT EXECUTE FUNCTION history_is_append_only();
    """,
    # The answer memory for replayed deliveries, shared by every host: ``id`` orders answers
    # by when they were remembered, so the size bound is one index range (see postgres.py).
    """
    CREATE TABLE answers (
        id bigserial PRIMARY KEY,
        door text NOT NULL,
        key text NOT NULL CHECK (key ~ '^[0-9a-f]{64}$'),
        outcome text NOT NULL,
        reason text NOT NULL,
        email text,
        at timestamptz NOT NULL,
        UNIQUE (door, key)
    );
    CREATE INDEX answers_at ON answers (at);
    """,
)
VERSION = len(STEPS)


class SchemaTooNew(psycopg.Error):
    """The database was migrated by a newer version of the collector."""


def current_version(conn: psycopg.Connection[TupleRow]) -> int:
    """The schema's version, 0 for an empty database; reads only (works on a standby)."""
    row = conn.execute("SELECT to_regclass('schema_version') IS NOT NULL").fetchone()
    if not row or not row[0]:
        return 0
    row = conn.execute("SELECT coalesce(max(version), 0) FROM schema_version").fetchone()
    return row[0] if row else 0


def migrate(conn: psycopg.Connection[TupleRow]) -> int:
    """Bring the schema to :data:`VERSION`; returns the version found before. A schema that
    is current costs two reads and no lock."""
    found = current_version(conn)
    if found == VERSION:
        return found
    if found > VERSION:
        raise _too_new(found)
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s, 0)", (LOCK_KEY,))
        conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_version ("
            " version integer PRIMARY KEY,"
            " applied_at timestamptz NOT NULL DEFAULT now())"
        )
        row = conn.execute("SELECT coalesce(max(version), 0) FROM schema_version").fetchone()
        found = row[0] if row else 0
        if found > VERSION:
            raise _too_new(found)
        for version in range(found + 1, VERSION + 1):
            conn.execute(STEPS[version - 1])
            conn.execute("INSERT INTO schema_version (version) VALUES (%s)", (version,))
    return found


def _too_new(found: int) -> SchemaTooNew:
    return SchemaTooNew(
        f"the database schema is version {found}, newer than this collector's {VERSION}: "
        "upgrade this host"
    )
