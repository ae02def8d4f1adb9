"""The folder backend: ``<address>.crt`` files a reader can use, and nothing else visible.

Writes are atomic and durable (dot-prefixed temp file, fsync, rename, fsync of the folder),
serialised per address with an ``fcntl`` lock so concurrent workers never tear a file, and never
downgrade: an older certificate does not replace a newer one, and a replaced certificate is kept
under ``.history/``. Everything the service keeps besides the certificates is dot-prefixed.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import tempfile
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from smime_collector.store.base import Decision, Entry, StoreResult, supersede
from smime_collector.trust import CORRUPT_CERTIFICATE, fingerprint
from smime_collector.verdict import Check, Reason

MAX_ADDRESS_LENGTH = 254
HISTORY = ".history"
LOCKS = ".locks"
MAX_NAME_BYTES = 255  # NAME_MAX: the longest file name (in bytes) Linux file systems take
#: The longest name made from an address: ``.history/<address>.<SHA-256 hex>.crt``.
MAX_ADDRESS_BYTES = MAX_NAME_BYTES - len(".") - 64 - len(".crt")


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

    def __init__(self, folder: Path) -> None:
        self.folder = folder

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

    def save(
        self, address: str, cert: x509.Certificate, current_revoked: bool = False
    ) -> StoreResult:
        """Store ``cert`` for ``address``: stored, unchanged, older-than-stored or store-error."""
        reason = unsafe_address(address)
        if reason:
            return StoreResult(Check.fail(Reason.UNSAFE_ADDRESS, reason))
        address = address.lower()
        try:
            self.ensure()
            with self._locked(address):
                return self._save_locked(address, cert, current_revoked)
        except OSError as exc:
            return StoreResult(Check.retry(Reason.STORE_ERROR, f"cannot write certificate: {exc}"))

    def _save_locked(
        self, address: str, cert: x509.Certificate, current_revoked: bool
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
        data = cert.public_bytes(serialization.Encoding.PEM)
        self._write_atomic(self.folder, path.name, data)
        return StoreResult(Check.passed("stored"), True, str(path), len(data))

    def list(self, expiring_before: datetime | None = None) -> list[Entry]:
        """Every stored certificate (sorted by address), optionally only those expiring soon."""
        entries: list[Entry] = []
        if not self.folder.is_dir():
            return entries
        for path in sorted(self.folder.glob("*.crt")):
            if path.name.startswith(".") or path.is_symlink():
                continue
            try:
                cert = x509.load_pem_x509_certificate(path.read_bytes())
            except (OSError, *CORRUPT_CERTIFICATE):
                continue
            if expiring_before is not None and cert.not_valid_after_utc > expiring_before:
                continue
            entries.append(
                Entry(
                    path.name.removesuffix(".crt"),
                    cert.issuer.rfc4514_string(),
                    cert.not_valid_after_utc,
                    fingerprint(cert),
                )
            )
        return entries

    def _keep_history(self, address: str, cert: x509.Certificate) -> None:
        history = self.folder / HISTORY
        history.mkdir(exist_ok=True)
        name = f"{address}.{fingerprint(cert)}.crt"
        if not (history / name).exists():
            self._write_atomic(history, name, cert.public_bytes(serialization.Encoding.PEM))

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
        dir_fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)

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
