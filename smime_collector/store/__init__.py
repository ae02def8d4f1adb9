"""Certificate stores: one interface (:class:`CertStore`), a backend per ``store =`` value."""

from __future__ import annotations

from smime_collector.config import Settings
from smime_collector.store.base import (
    CertStore,
    Decision,
    Entry,
    HistoryEntry,
    Page,
    StoreResult,
    StoreStats,
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
    "StoreResult",
    "StoreStats",
    "open_store",
    "supersede",
]


def open_store(settings: Settings) -> CertStore:
    """The store ``settings`` name. Opening touches nothing; ``health()`` checks it."""
    return FolderStore(settings.user_certs_dir, settings.verdict_retention_days)
