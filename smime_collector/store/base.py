"""The seam between the pipeline and wherever certificates are kept.

Every consumer (the pipeline, ``GET /certs``, ``/healthz``, ``--check-config``, gunicorn's
start-up check, the harvesting CLI) talks to a :class:`CertStore`, never to a folder or a
database directly. Whether a new certificate may replace the stored one is decided in exactly
one place, :func:`supersede`, which every backend calls under its own lock or transaction.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import Enum
from typing import Protocol

from cryptography import x509

from smime_collector.journal import JournalEntry, JournalPage
from smime_collector.verdict import Check


class Decision(Enum):
    STORE = "store"
    UNCHANGED = "unchanged"
    REFUSE_OLDER = "refuse-older"


def supersede(
    current: x509.Certificate | None, new: x509.Certificate, current_revoked: bool = False
) -> tuple[Decision, str]:
    """May ``new`` replace ``current`` as an address's certificate?

    No downgrade: a certificate issued before the stored one (earlier notBefore) is refused, so
    replaying an old signed mail cannot bring back a certificate its owner has moved on from. A
    revoked stored certificate never blocks its owner: anything valid replaces it.
    """
    if current is None:
        return Decision.STORE, "no certificate stored yet"
    if current == new:
        return Decision.UNCHANGED, "the same certificate is already stored"
    if current_revoked:
        return Decision.STORE, "the stored certificate is revoked"
    if new.not_valid_before_utc < current.not_valid_before_utc:
        return (
            Decision.REFUSE_OLDER,
            f"stored certificate is newer (notBefore {current.not_valid_before_utc:%Y-%m-%d}) "
            f"than this one ({new.not_valid_before_utc:%Y-%m-%d})",
        )
    return Decision.STORE, "replaces an older certificate"


@dataclass(frozen=True)
class StoreResult:
    """What a save did: ``check`` carries the reason (ok, older-than-stored, store-error ...)."""

    check: Check
    changed: bool = False
    location: str | None = None
    size: int = 0


@dataclass(frozen=True)
class Entry:
    """One stored certificate as listings show it."""

    email: str
    issuer: str
    not_after: datetime
    sha256: str

    def as_dict(self) -> dict[str, str]:
        return {
            "email": self.email,
            "issuer": self.issuer,
            "not_after": self.not_after.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "sha256": self.sha256,
        }


@dataclass(frozen=True)
class Page:
    """One page of a listing: ``entries`` from ``offset`` of ``total`` matches."""

    entries: list[Entry]
    total: int
    offset: int
    limit: int


@dataclass(frozen=True)
class StoreStats:
    """What dashboards and gauges need, from the store's index without reading certificates:
    how many are stored, how many expire before a given time, and the earliest notAfter."""

    count: int
    expiring: int
    earliest_expiry: datetime | None


@dataclass(frozen=True)
class HistoryEntry:
    """A certificate that was an address's and is no longer, or was refused: ``event`` is
    ``replaced``, ``revoked`` or ``refused-older``; ``at`` is when, where the store knows."""

    sha256: str
    issuer: str
    not_before: datetime
    not_after: datetime
    event: str
    at: datetime | None


def matches(entry: Entry, text: str) -> bool:
    """The search every backend offers: ``text`` in the address or the issuer, or a prefix of
    the SHA-256 fingerprint, ignoring case."""
    text = text.strip().lower()
    return (
        not text
        or text in entry.email
        or text in entry.issuer.lower()
        or entry.sha256.startswith(text.replace(":", ""))
    )


class CertStore(Protocol):
    """Where certificates live. Backends: ``folder`` (default) and ``postgresql``."""

    #: The backend's name, as ``store =`` spells it.
    kind: str

    def prepare(self) -> None:
        """Create what the backend needs (the folder, the schema); idempotent, and cheap when
        done already. Raises ``OSError`` (or the backend's error) when it cannot."""

    def unsafe(self, address: str) -> str | None:
        """Why this backend cannot hold ``address`` (``unsafe-address``), or ``None``."""

    def location(self, address: str) -> str:
        """Where ``address``'s certificate is, as verdicts and logs show it."""

    def get(self, address: str) -> x509.Certificate | None:
        """The current certificate of ``address`` (matched case-insensitively), or ``None``."""

    def get_der(self, address: str) -> bytes | None:
        """The current certificate of ``address`` as the exact bytes that arrived."""

    def save(
        self,
        address: str,
        cert: x509.Certificate,
        current_revoked: bool = False,
        der: bytes | None = None,
        chain: Sequence[bytes] | None = None,
    ) -> StoreResult:
        """Make ``cert`` the current certificate of ``address`` if :func:`supersede` allows.
        ``der``: its exact bytes, kept as they are; ``chain``: its issuers, for re-validation.
        A certificate with a revoked marker is refused (``revoked``)."""

    def addresses(self) -> list[str]:
        """Every address with a current certificate, sorted."""

    def chain(self, address: str) -> list[bytes]:
        """The issuers kept with ``address``'s certificate (exact bytes)."""

    def is_revoked(self, address: str, cert: x509.Certificate) -> bool:
        """Whether ``cert`` was found revoked for ``address``."""

    def mark_revoked(self, address: str, cert: x509.Certificate, detail: str) -> None:
        """Record that ``cert`` was found revoked (and when); it is never served or stored."""

    def retire_revoked(self, address: str, cert: x509.Certificate, detail: str) -> bool:
        """Move a revoked current certificate aside with its marker; False when ``address``
        no longer holds ``cert``."""

    def list(self, expiring_before: datetime | None = None) -> list[Entry]:
        """Current certificates sorted by address; only those whose notAfter is before
        ``expiring_before`` when it is given."""

    def search(
        self,
        text: str = "",
        offset: int = 0,
        limit: int = 50,
        expiring_before: datetime | None = None,
    ) -> Page:
        """A page of :meth:`list`, only entries :func:`matches` ``text``, sorted by address."""

    def stats(self, expiring_before: datetime | None = None) -> StoreStats:
        """Counts from the index, cheap enough for every ``/metrics`` scrape."""

    def history(self, address: str) -> list[HistoryEntry]:
        """Certificates ``address`` had before its current one, newest first."""

    def record(self, entry: JournalEntry) -> None:
        """Append a verdict to the store's journal: bounded by ``verdict-retention-days``,
        durable across restarts. Raises ``OSError`` (or the backend's error) when it cannot."""

    def verdicts(
        self, text: str = "", outcome: str = "", offset: int = 0, limit: int = 50
    ) -> JournalPage:
        """Journal entries, newest first, whose address (or envelope sender) contains ``text``
        and whose outcome is ``outcome`` when given."""

    def verdict_counts(self, since: datetime) -> Counter[tuple[str, str]]:
        """How many verdicts since ``since``, by (outcome, reason)."""

    def health(self) -> Check:
        """Can the store be written now? A failure is a ``store-error`` retry check."""
