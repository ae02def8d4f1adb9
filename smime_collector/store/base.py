"""The seam between the pipeline and wherever certificates are kept.

Every consumer (the pipeline, ``GET /certs``, ``/healthz``, ``--check-config``, gunicorn's
start-up check, the harvesting CLI, ``--export``/``--import``) talks to a :class:`CertStore`,
never to a folder or a database directly. Whether a new certificate may replace the stored one
is decided in exactly one place, :func:`supersede`, which every backend calls under its own lock
or transaction.

What a store keeps, whatever the backend:

- per address (lower case), its *current* certificate, exact DER bytes;
- an append-only *history* per address: every certificate that was replaced (``replaced``),
  replaced because it was revoked (``revoked``), or refused because the stored one is newer
  (``refused-older``), each with when and why (:class:`HistoryEntry`);
- an index over the current certificates, so that listings (``GET /certs``,
  ``?expiring-within=``, re-checks) never read and parse every certificate;
- the *answer memory*: the final verdict each provider delivery key (a Mailgun token, an SNS
  ``MessageId``) got, so that a replay gets the same answer without being judged again on
  whichever worker or host it reaches. It lives in the store because the store is what every
  worker and every host behind one load balancer share.

Adding a method: add it here with its contract, then to every backend (``folder.py``,
``postgres.py``), and run ``tests/test_certstore.py``, which runs each test on both.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import Enum, StrEnum
from typing import NamedTuple, Protocol

from cryptography import x509

from smime_collector.journal import JournalEntry, JournalPage
from smime_collector.trust import fingerprint
from smime_collector.verdict import Check, Outcome, Reason, Verdict


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


class StoreUnavailable(Exception):
    """The store cannot answer now (database down or timing out, folder unreadable): a caller
    answers ``503``/``tempfail``, never ``404`` or an empty listing."""


class Why(StrEnum):
    """Why a certificate entered an address's history."""

    REPLACED = "replaced"  # a newer certificate took its place
    REVOKED = "revoked"  # it was revoked, and replaced or retired
    REFUSED_OLDER = "refused-older"  # offered, but the stored certificate is newer


@dataclass(frozen=True)
class HistoryEntry:
    """One event of an address's history: a certificate that was the address's and is no
    longer (``replaced``; ``revoked`` when it was found revoked, replaced or retired), or one
    that was offered and refused because the stored one is newer (``refused-older``).

    ``event`` is a :class:`Why` value; ``at`` when it happened (``None`` where a store cannot
    tell); ``detail`` why in words; ``issuer`` and the validity describe the certificate
    (``None`` where the store no longer knows them); ``der`` is the certificate's exact bytes
    when the store keeps them (always for ``replaced`` and ``revoked``).
    """

    sha256: str
    issuer: str
    not_before: datetime | None
    not_after: datetime | None
    event: str
    at: datetime | None
    detail: str = ""
    der: bytes | None = field(default=None, repr=False, compare=False)

    @classmethod
    def of(
        cls,
        cert: x509.Certificate,
        event: Why,
        at: datetime | None,
        detail: str = "",
        der: bytes | None = None,
    ) -> HistoryEntry:
        """An entry describing ``cert``."""
        return cls(
            fingerprint(cert),
            cert.issuer.rfc4514_string(),
            cert.not_valid_before_utc,
            cert.not_valid_after_utc,
            event,
            at,
            detail,
            der,
        )

    @property
    def key(self) -> tuple[str, str, str]:
        """What makes two entries the same event (imports skip events already recorded)."""
        return self.sha256, stamp(self.at) if self.at else "", str(self.event)

    def as_dict(self) -> dict[str, str | None]:
        """The journal line of the folder store: the event, and the certificate described."""
        return {
            "when": stamp(self.at) if self.at else None,
            "why": str(self.event),
            "sha256": self.sha256,
            "detail": self.detail,
            "issuer": self.issuer,
            "not_before": stamp(self.not_before) if self.not_before else None,
            "not_after": stamp(self.not_after) if self.not_after else None,
        }


@dataclass(frozen=True)
class Record:
    """Everything a store holds for one address: for ``--export`` and ``--import``."""

    address: str
    current: bytes | None  # DER, or None when only history is left
    history: list[HistoryEntry]
    chain: list[bytes] = field(default_factory=list)  # the current certificate's issuers


#: RFC 5321's limit on an address (the path, less the angle brackets).
MAX_ADDRESS_LENGTH = 254


def normal_address(address: str) -> str:
    """The form every store keys an address by (surrounding whitespace dropped, lower case):
    a lookup's address is typed by someone, and each read of one lookup must name the same
    record."""
    return address.strip().lower()


def address_problem(address: str) -> str | None:
    """Why no backend should hold ``address`` (``unsafe-address``), or ``None``. A backend adds
    its own limits (the folder: file names) on top of these."""
    if not address:
        return "address is empty"
    if len(address) > MAX_ADDRESS_LENGTH:
        return f"address is longer than {MAX_ADDRESS_LENGTH} characters"
    for ch in address:
        if ord(ch) < 0x20 or ord(ch) == 0x7F:
            return f"address contains the character {ch!r}"
    try:
        address.encode("utf-8")
    except UnicodeEncodeError:
        return "address is not valid Unicode text"
    return None


def stamp(when: datetime) -> str:
    """A history time as text: UTC, microseconds, so that it round-trips through any backend."""
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_stamp(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC)


@dataclass(frozen=True)
class StoreResult:
    """What a save did: ``check`` carries the reason (ok, older-than-stored, store-error ...)."""

    check: Check
    changed: bool = False
    location: str | None = None
    size: int = 0


class Entry(NamedTuple):
    """One stored certificate as listings show it. A named tuple, not a dataclass: a listing
    makes 100,000 of them, and a frozen dataclass costs four times as much to build."""

    email: str
    issuer: str
    not_after: datetime
    sha256: str

    def as_dict(self) -> dict[str, str]:
        return {
            "email": self.email,
            "issuer": self.issuer,
            # isoformat is several times faster than strftime: listings have 100,000 rows
            "not_after": self.not_after.isoformat(timespec="seconds").replace("+00:00", "Z"),
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


#: Days of verdicts a store's journal keeps unless ``verdict-retention-days`` says otherwise.
DEFAULT_RETENTION_DAYS = 30
#: How long a final answer is remembered: longer than any provider retries (Mailgun 8 h).
REMEMBER_SECONDS = 24 * 3600
#: Answers kept at most, oldest dropped first (about 200 bytes each).
MAX_REMEMBERED = 100_000


def answer_key(key: str) -> str:
    """A delivery key as the answer memory keeps it: hashed, so fixed length whatever the
    provider (or someone replaying its request) sends."""
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()


def remembered_verdict(outcome: str, reason: str, email: str | None) -> Verdict | None:
    """A remembered answer read back; ``None`` for codes this version does not know (written
    by another version during a rolling upgrade), which are then judged again."""
    try:
        return Verdict(Outcome(outcome), Reason(reason), email)
    except ValueError:
        return None


class CertStore(Protocol):
    """Where certificates live. Backends: ``folder`` (default) and ``postgresql``."""

    #: The backend's name, as ``store =`` spells it.
    kind: str
    #: How messages name this store: the folder's path, or the database's URL (no password).
    description: str

    def prepare(self) -> None:
        """Create what the backend needs (the folder, the schema); idempotent, and cheap when
        done already. Raises :class:`~smime_collector.config.ConfigError` naming the key (a
        folder that cannot be made) or :class:`StoreUnavailable` when it cannot."""

    def close(self) -> None:
        """Let go of connections and files; the store reopens them on next use. Called by a
        process before it forks (gunicorn's master) so that no child inherits a connection."""

    def unsafe(self, address: str) -> str | None:
        """Why this backend cannot hold ``address`` (``unsafe-address``), or ``None``."""

    def location(self, address: str) -> str:
        """Where ``address``'s certificate is, as verdicts and logs show it."""

    def get(self, address: str) -> x509.Certificate | None:
        """The current certificate of ``address`` (matched case-insensitively), or ``None``.
        Raises :class:`StoreUnavailable` when the store cannot answer."""

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
        """Make ``cert`` the current certificate of ``address`` if :func:`supersede` allows,
        atomically with respect to every other writer (other workers, other hosts). ``der``:
        its exact bytes, kept as they are; ``chain``: its issuers, for re-validation. A
        replaced certificate enters the history as ``replaced`` (``revoked`` when
        ``current_revoked``), a refused one as ``refused-older``. A certificate found revoked
        earlier (:meth:`mark_revoked`) is refused (``revoked``). Never raises for the store's
        own failures: they are a ``store-error`` retry check in the result."""

    def addresses(self) -> list[str]:
        """Every address with a current certificate, sorted. Raises
        :class:`StoreUnavailable`."""

    def chain(self, address: str) -> list[bytes]:
        """The issuers kept with ``address``'s certificate (exact bytes)."""

    def is_revoked(self, address: str, cert: x509.Certificate) -> bool:
        """Whether ``cert`` was found revoked for ``address``."""

    def mark_revoked(self, address: str, cert: x509.Certificate, detail: str) -> None:
        """Record that ``cert`` was found revoked (and when); it is never served or stored."""

    def retire_revoked(self, address: str, cert: x509.Certificate, detail: str) -> bool:
        """Move a revoked current certificate into the history (``revoked``) with its marker;
        False when ``address`` no longer holds ``cert``."""

    def list(self, expiring_before: datetime | None = None) -> list[Entry]:
        """Current certificates sorted by address; only those whose notAfter is before
        ``expiring_before`` when it is given. Answered from the backend's index, never by
        parsing every certificate. Raises :class:`StoreUnavailable`."""

    def dump(self) -> Iterator[Record]:
        """Every address with its current certificate and history, sorted by address, streamed
        (for ``--export``). Raises :class:`StoreUnavailable`."""

    def restore_history(self, address: str, entries: Iterable[HistoryEntry]) -> int:
        """Append past events verbatim (``--import``, ``--export``), skipping those already
        recorded (same :attr:`HistoryEntry.key`); returns how many were added. Raises
        :class:`StoreUnavailable`."""

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
        """The history of ``address`` (replaced, revoked and refused certificates), newest
        first. Raises :class:`StoreUnavailable`."""

    def record(self, entry: JournalEntry) -> None:
        """Append a verdict to the store's journal: bounded by ``verdict-retention-days``,
        durable across restarts. Raises ``OSError`` or :class:`StoreUnavailable` when it
        cannot."""

    def verdicts(
        self, text: str = "", outcome: str = "", offset: int = 0, limit: int = 50
    ) -> JournalPage:
        """Journal entries, newest first, whose address (or envelope sender) contains ``text``
        and whose outcome is ``outcome`` when given."""

    def verdict_counts(self, since: datetime) -> Counter[tuple[str, str]]:
        """How many verdicts since ``since``, by (outcome, reason)."""

    def recall_answer(self, door: str, key: str) -> Verdict | None:
        """The final verdict the delivery ``key`` (a Mailgun token, an SNS ``MessageId``) got
        at ``door`` within :data:`REMEMBER_SECONDS`, as any process or host sharing this store
        remembered it; ``None`` when there is none. Raises :class:`StoreUnavailable` when the
        memory cannot be read: the caller then judges the delivery as new, which is safe
        because judging is idempotent."""

    def remember_answer(self, door: str, key: str, verdict: Verdict) -> None:
        """Remember ``verdict`` for ``key`` at ``door`` if it is final (``tempfail`` never is
        remembered, so the provider's retry is judged again), for :data:`REMEMBER_SECONDS`,
        keeping at most :data:`MAX_REMEMBERED` answers, oldest dropped first. Raises
        :class:`StoreUnavailable` when it cannot (the answer is then simply not remembered)."""

    def health(self) -> Check:
        """Can the store be written now? A failure is a ``store-error`` retry check."""
