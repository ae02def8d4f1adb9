"""Certificate stores: one interface (:class:`CertStore`), a backend per ``store =`` value."""

from __future__ import annotations

from smime_collector.config import Settings
from smime_collector.store.base import (
    CertStore,
    Decision,
    Entry,
    HistoryEntry,
    Page,
    Record,
    StoreResult,
    StoreStats,
    StoreUnavailable,
    Why,
    supersede,
)
from smime_collector.store.folder import FolderStore

__all__ = [
    "CertStore",
    "Decision",
    "Entry",
    "FolderStore",
    "HistoryEntry",
    "Page",
    "Record",
    "StoreResult",
    "StoreStats",
    "StoreUnavailable",
    "Why",
    "open_store",
    "supersede",
]


def open_store(settings: Settings) -> CertStore:
    """The store ``settings`` name. Opening touches nothing (no folder, no connection);
    ``prepare()`` creates what it needs and ``health()`` checks it."""
    if settings.store == "postgresql":
        from smime_collector.store.postgres import PostgresStore  # psycopg only when used

        return PostgresStore(
            settings.database_url,
            settings.database_password,
            settings.database_pool_size,
            settings.verdict_retention_days,
        )
    return FolderStore(settings.user_certs_dir, settings.verdict_retention_days)
