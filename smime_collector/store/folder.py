"""The folder backend: ``<address>.crt`` files a reader can use, and nothing else visible.

Writes are atomic and durable (dot-prefixed temp file, fsync, rename, fsync of the folder),
serialised per address with an ``fcntl`` lock so concurrent workers never tear a file, and never
downgrade: an older certificate does not replace a newer one, and a replaced certificate is kept
under ``.history/``. Certificates are written as the exact bytes they arrived in. A revoked one
moves to ``.history/`` beside a ``.revoked`` marker; ``.chains/`` keeps each certificate's
issuers for ``--recheck``. Everything the service keeps besides the certificates is
dot-prefixed.
"""

from __future__ import annotations

import base64
import contextlib
import errno
import fcntl
import json
import os
import re
import tempfile
from collections import Counter
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path

from asn1crypto import pem as asn1_pem
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from smime_collector.journal import JournalEntry, JournalPage
from smime_collector.store.base import (
    Decision,
    Entry,
    HistoryEntry,
    Page,
    StoreResult,
    StoreStats,
    matches,
    supersede,
)
from smime_collector.store.folderindex import FolderIndex
from smime_collector.store.folderjournal import FolderJournal
from smime_collector.trust import CORRUPT_CERTIFICATE, fingerprint
from smime_collector.verdict import Check, Reason

MAX_ADDRESS_LENGTH = 254
HISTORY = ".history"
LOCKS = ".locks"
CHAINS = ".chains"
REVOKED_SUFFIX = ".revoked"
MAX_NAME_BYTES = 255  # NAME_MAX: the longest file name (in bytes) Linux file systems take
#: The longest name made from an address: ``.history/<address>.<SHA-256 hex>.crt``.
MAX_ADDRESS_BYTES = MAX_NAME_BYTES - len(".") - 64 - len(".crt")
DEFAULT_RETENTION_DAYS = 30


_DER = serialization.Encoding.DER


def pem_of(der: bytes) -> bytes:
    """PEM armour around exactly ``der`` (RFC 7468: 64-column base64)."""
    text = base64.b64encode(der)
    lines = b"\n".join(text[i : i + 64] for i in range(0, len(text), 64))
    return b"-----BEGIN CERTIFICATE-----\n" + lines + b"\n-----END CERTIFICATE-----\n"


def unsafe_address(address: str) -> str | None:
    """Why an address cannot name a file in the folder, or ``None`` when it can."""
    if len(address) > MAX_ADDRESS_LENGTH:
        return f"address is longer than {MAX_ADDRESS_LENGTH} characters"
    if address.startswith("."):
        return "address starts with a dot"
    for ch in address:
        if ch in "/\\" or ord(ch) < 0x20 or ord(ch) == 0x7F:
            return f"address contains the character {ch!r}"
    try:
        size = len(address.lower().encode("utf-8"))
    except UnicodeEncodeError:
        return "address is not valid Unicode text"
    if size > MAX_ADDRESS_BYTES:
        # Longer names fail with ENAMETOOLONG: a tempfail the relay would retry for ever.
        return f"address is longer than the {MAX_ADDRESS_BYTES} bytes a file name allows"
    return None


class FolderStore:
    """The embedded default store (``store = folder``): the layout the seed wrote."""

    kind = "folder"

    def __init__(self, folder: Path, retention_days: int = DEFAULT_RETENTION_DAYS) -> None:
        self.folder = folder
        self.index = FolderIndex(folder, folder / HISTORY, REVOKED_SUFFIX)
        self.journal = FolderJournal(folder, retention_days)

    def unsafe(self, address: str) -> str | None:
        return unsafe_address(address)

    def location(self, address: str) -> str:
        return str(self.path_for(address))

    def prepare(self) -> None:
        self.ensure()

    def ensure(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)

    def path_for(self, address: str) -> Path:
        return self.folder / f"{address.lower()}.crt"

    def get(self, address: str) -> x509.Certificate | None:
        address = address.strip().lower()
        if not address or unsafe_address(address):
            return None
        return self.read(address)

    def read(self, address: str) -> x509.Certificate | None:
        """The stored certificate, never following a symlink planted at its name."""
        try:
            fd = os.open(self.path_for(address), os.O_RDONLY | os.O_NOFOLLOW)
        except OSError as exc:
            if exc.errno in (errno.ENOENT, errno.ELOOP):
                return None
            raise
        with os.fdopen(fd, "rb") as handle:
            data = handle.read()
        try:
            return x509.load_pem_x509_certificate(data)
        except CORRUPT_CERTIFICATE:
            return None  # a damaged file is replaced by a good certificate, never trusted

    def get_der(self, address: str) -> bytes | None:
        """The stored certificate's exact bytes (what arrived), never following a symlink."""
        address = address.strip().lower()
        if not address or unsafe_address(address):
            return None
        try:
            fd = os.open(self.path_for(address), os.O_RDONLY | os.O_NOFOLLOW)
        except OSError as exc:
            if exc.errno in (errno.ENOENT, errno.ELOOP):
                return None
            raise
        with os.fdopen(fd, "rb") as handle:
            data = handle.read()
        try:
            kind, _, der = asn1_pem.unarmor(data)
        except (ValueError, TypeError):
            return None
        return der if kind == "CERTIFICATE" else None

    def addresses(self) -> list[str]:
        """Every address with a stored certificate, sorted."""
        if not self.folder.is_dir():
            return []
        return sorted(
            p.name.removesuffix(".crt")
            for p in self.folder.glob("*.crt")
            if not p.name.startswith(".") and not p.is_symlink()
        )

    def chain(self, address: str) -> list[bytes]:
        """The issuers kept with ``address``'s certificate (exact bytes), for re-validation."""
        try:
            data = (self.folder / CHAINS / f"{address.lower()}.pem").read_bytes()
            return [
                der
                for kind, _, der in asn1_pem.unarmor(data, multiple=True)
                if kind == "CERTIFICATE"
            ]
        except (OSError, ValueError, TypeError):
            return []

    def _marker(self, address: str, cert: x509.Certificate) -> Path:
        return self.folder / HISTORY / f"{address.lower()}.{fingerprint(cert)}{REVOKED_SUFFIX}"

    def is_revoked(self, address: str, cert: x509.Certificate) -> bool:
        """Whether ``cert`` was found revoked for ``address`` (it has a marker)."""
        return self._marker(address, cert).exists()

    def mark_revoked(self, address: str, cert: x509.Certificate, detail: str) -> None:
        """Record that ``cert`` was found revoked, and when: ``.history/<address>.<sha256>
        .revoked``, beside the certificate's copy there."""
        address = address.lower()
        history = self.folder / HISTORY
        history.mkdir(parents=True, exist_ok=True)
        marker = {
            "state": "revoked",
            "email": address,
            "sha256": fingerprint(cert),
            "found": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "detail": detail,
        }
        data = (json.dumps(marker, indent=1) + "\n").encode()
        self._write_atomic(history, self._marker(address, cert).name, data)

    def retire_revoked(self, address: str, cert: x509.Certificate, detail: str) -> bool:
        """Move ``cert`` out of ``<address>.crt`` into ``.history/`` with its marker. False
        when the file no longer holds ``cert`` or cannot be changed."""
        address = address.lower()
        try:
            with self._locked(address):
                if self.read(address) != cert:
                    return False
                self._keep_history(address, cert)
                self.mark_revoked(address, cert, detail)
                os.unlink(self.path_for(address))
                with contextlib.suppress(OSError):
                    os.unlink(self.folder / CHAINS / f"{address}.pem")
                _fsync_folder(self.folder)
                return True
        except OSError:
            return False

    def save(
        self,
        address: str,
        cert: x509.Certificate,
        current_revoked: bool = False,
        der: bytes | None = None,
        chain: Sequence[bytes] | None = None,
    ) -> StoreResult:
        """Store ``cert`` for ``address``: stored, unchanged, older-than-stored, revoked (a
        certificate already found revoked) or store-error.

        ``der`` is the certificate exactly as it arrived: the stored PEM decodes to exactly
        those bytes. ``chain`` (its issuers, exact bytes) is kept for ``--recheck``.
        """
        reason = unsafe_address(address)
        if reason:
            return StoreResult(Check.fail(Reason.UNSAFE_ADDRESS, reason))
        address = address.lower()
        try:
            self.ensure()
            with self._locked(address):
                if self.is_revoked(address, cert):
                    return StoreResult(
                        Check.fail(Reason.REVOKED, "this certificate was found revoked earlier")
                    )
                result = self._save_locked(
                    address, cert, current_revoked, der or cert.public_bytes(_DER)
                )
                if result.changed and chain is not None:
                    chains = self.folder / CHAINS
                    chains.mkdir(exist_ok=True)
                    self._write_atomic(chains, f"{address}.pem", b"".join(map(pem_of, chain)))
                return result
        except OSError as exc:
            return StoreResult(Check.retry(Reason.STORE_ERROR, f"cannot write certificate: {exc}"))

    def _save_locked(
        self, address: str, cert: x509.Certificate, current_revoked: bool, der: bytes
    ) -> StoreResult:
        path = self.path_for(address)
        current = self.read(address)
        decision, why = supersede(current, cert, current_revoked)
        if decision is Decision.UNCHANGED:
            return StoreResult(Check.passed(why), False, str(path))
        if decision is Decision.REFUSE_OLDER:
            return StoreResult(Check.fail(Reason.OLDER_THAN_STORED, why))
        if current is not None:
            self._keep_history(address, current)
        data = pem_of(der)
        self._write_atomic(self.folder, path.name, data)
        return StoreResult(Check.passed("stored"), True, str(path), len(data))

    def list(self, expiring_before: datetime | None = None) -> list[Entry]:
        """Every stored certificate (sorted by address), optionally only those expiring soon."""
        entries = self.index.entries()
        if expiring_before is None:
            return list(entries)
        return [e for e in entries if e.not_after <= expiring_before]

    def search(
        self,
        text: str = "",
        offset: int = 0,
        limit: int = 50,
        expiring_before: datetime | None = None,
    ) -> Page:
        found = [e for e in self.list(expiring_before) if matches(e, text)]
        return Page(found[offset : offset + limit], len(found), offset, limit)

    def stats(self, expiring_before: datetime | None = None) -> StoreStats:
        entries = self.index.entries()
        expiring = 0
        if expiring_before is not None:
            expiring = sum(1 for e in entries if e.not_after <= expiring_before)
        earliest = min((e.not_after for e in entries), default=None)
        return StoreStats(len(entries), expiring, earliest)

    def history(self, address: str) -> list[HistoryEntry]:
        """Certificates kept in ``.history/``, newest first: ``revoked`` when a marker says so
        (and when it was found), else ``replaced`` (when: the copy's time)."""
        address = address.strip().lower()
        if not address or unsafe_address(address):
            return []
        pattern = re.compile(re.escape(address) + r"\.([0-9a-f]{64})\.crt")
        try:
            names = os.listdir(self.folder / HISTORY)
        except FileNotFoundError:
            return []
        found = []
        for name in names:
            if not pattern.fullmatch(name):
                continue
            path = self.folder / HISTORY / name
            try:
                cert = x509.load_pem_x509_certificate(path.read_bytes())
                at = datetime.fromtimestamp(path.stat().st_mtime, UTC)
            except (OSError, *CORRUPT_CERTIFICATE):
                continue
            event = "replaced"
            revoked_at = self._revoked_at(address, cert)
            if revoked_at is not None:
                event, at = "revoked", revoked_at
            found.append(
                HistoryEntry(
                    fingerprint(cert),
                    cert.issuer.rfc4514_string(),
                    cert.not_valid_before_utc,
                    cert.not_valid_after_utc,
                    event,
                    at,
                )
            )
        return sorted(found, key=lambda h: (h.at, h.not_before), reverse=True)

    def _revoked_at(self, address: str, cert: x509.Certificate) -> datetime | None:
        """When the marker says ``cert`` was found revoked (the marker's own time if it does
        not say); ``None`` without a marker."""
        marker = self._marker(address, cert)
        try:
            text = marker.read_text("utf-8")
            stat = marker.stat()
        except FileNotFoundError:
            return None
        except OSError:
            return datetime.fromtimestamp(0, UTC)
        try:
            return datetime.fromisoformat(json.loads(text)["found"].replace("Z", "+00:00"))
        except (ValueError, KeyError, TypeError, AttributeError):
            return datetime.fromtimestamp(stat.st_mtime, UTC)

    def record(self, entry: JournalEntry) -> None:
        self.journal.append(entry)

    def verdicts(
        self, text: str = "", outcome: str = "", offset: int = 0, limit: int = 50
    ) -> JournalPage:
        return self.journal.page(text, outcome, offset, limit)

    def verdict_counts(self, since: datetime) -> Counter[tuple[str, str]]:
        return self.journal.counts(since)

    def _keep_history(self, address: str, cert: x509.Certificate) -> None:
        history = self.folder / HISTORY
        history.mkdir(exist_ok=True)
        name = f"{address}.{fingerprint(cert)}.crt"
        if not (history / name).exists():
            der = self.get_der(address) or cert.public_bytes(_DER)
            self._write_atomic(history, name, pem_of(der))

    @staticmethod
    def _write_atomic(folder: Path, name: str, data: bytes) -> None:
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".crt", dir=folder)
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fchmod(handle.fileno(), 0o644)
                os.fsync(handle.fileno())
            os.replace(tmp, folder / name)  # replaces a symlink itself, never its target
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        _fsync_folder(folder)

    @contextlib.contextmanager
    def _locked(self, address: str) -> Iterator[None]:
        locks = self.folder / LOCKS
        locks.mkdir(exist_ok=True)
        fd = os.open(locks / f"{address}.lock", os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def health(self) -> Check:
        """The folder exists (or can be made) and takes a new file."""
        try:
            self.ensure()
            with tempfile.TemporaryFile(prefix=".probe-", dir=self.folder):
                pass
        except OSError as exc:
            return Check.retry(Reason.STORE_ERROR, f"{self.folder} is not writable: {exc}")
        return Check.passed(f"{self.folder} is writable")


def _fsync_folder(folder: Path) -> None:
    dir_fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
