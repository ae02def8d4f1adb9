"""The folder backend: ``<address>.crt`` files a reader can use, and nothing else visible.

Writes are atomic and durable (dot-prefixed temp file, fsync, rename, fsync of the folder),
serialised per address with an ``fcntl`` lock so concurrent workers never tear a file, and never
downgrade: an older certificate does not replace a newer one. Certificates are written as the
exact bytes they arrived in. Everything the service keeps besides the certificates is
dot-prefixed:

- ``.history/<address>.<sha256>.crt``: each replaced or retired certificate (PEM), as the seed
  kept them;
- ``.history/<address>.jsonl``: the address's history journal, one JSON object per line
  (``when``, ``why``, ``sha256``, ``detail``), appended and fsynced under the address's lock;
  a replaced certificate's file without a journal line (kept before the journal existed) counts
  as ``replaced`` at the file's mtime;
- ``.history/<address>.<sha256>.revoked``: the marker of a certificate found revoked (it is
  never served or stored again);
- ``.chains/<address>.pem``: the issuers of each current certificate, for ``--recheck``;
- ``.locks/``: one lock file per address;
- ``.index/``: the sidecar listing index (``folderindex.py``), a cache rebuilt from the files;
- ``.verdicts/``: the verdict journal (``folderjournal.py``), kept ``verdict-retention-days``;
- ``.answers.sqlite3``: the answer memory for replayed deliveries (``folderanswers.py``).

The folder layout is also what ``--export`` writes, so file-reading consumers keep working.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import functools
import json
import logging
import os
import re
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

from asn1crypto import pem as asn1_pem
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from smime_collector.config import ConfigError
from smime_collector.journal import JournalEntry, JournalPage
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
    matches,
    normal_address,
    parse_stamp,
    supersede,
)
from smime_collector.store.folderanswers import FILE_NAME as ANSWERS
from smime_collector.store.folderanswers import FolderAnswers
from smime_collector.store.folderindex import (
    HISTORY,
    INDEX_DIR,
    FolderIndex,
    IndexUnusable,
    marker_name,
)
from smime_collector.store.folderjournal import FolderJournal
from smime_collector.trust import CORRUPT_CERTIFICATE, fingerprint
from smime_collector.verdict import Check, Reason, Verdict

log = logging.getLogger(__name__)

LOCKS = ".locks"
CHAINS = ".chains"
INDEX = INDEX_DIR
JOURNAL = ".jsonl"
#: A journal line longer than this is not one the store wrote: skipped, never parsed.
MAX_JOURNAL_LINE = 4096
_KEPT = re.compile(r"^(?P<address>.+)\.(?P<sha256>[0-9a-f]{64})\.crt$")
MAX_NAME_BYTES = 255  # NAME_MAX: the longest file name (in bytes) Linux file systems take
#: The longest name made from an address: ``.history/<address>.<SHA-256 hex>.crt``.
MAX_ADDRESS_BYTES = MAX_NAME_BYTES - len(".") - 64 - len(".crt")


_DER = serialization.Encoding.DER


def pem_of(der: bytes) -> bytes:
    """PEM armour around exactly ``der`` (RFC 7468: 64-column base64)."""
    return asn1_pem.armor("CERTIFICATE", der)


def unsafe_address(address: str) -> str | None:
    """Why an address cannot name a file in the folder, or ``None`` when it can: the rules
    every backend applies (:func:`address_problem`), then the file system's."""
    problem = address_problem(address)
    if problem:
        return problem
    if address.startswith("."):
        return "address starts with a dot"
    for ch in address:
        if ch in "/\\":
            return f"address contains the character {ch!r}"
    size = len(address.lower().encode("utf-8"))
    if size > MAX_ADDRESS_BYTES:
        # Longer names fail with ENAMETOOLONG: a tempfail the relay would retry for ever.
        return f"address is longer than the {MAX_ADDRESS_BYTES} bytes a file name allows"
    return None


class FolderStore:
    """The embedded default store (``store = folder``): the layout the seed wrote."""

    kind = "folder"

    def __init__(
        self,
        folder: Path,
        retention_days: int = DEFAULT_RETENTION_DAYS,
        *,
        remember_seconds: float = REMEMBER_SECONDS,
        max_remembered: int = MAX_REMEMBERED,
        answer_clock: Callable[[], float] = time.time,
    ) -> None:
        self.folder = folder
        self.description = str(folder)
        self.index = FolderIndex(folder)
        self.journal = FolderJournal(folder, retention_days)
        self.answers = FolderAnswers(
            folder / ANSWERS, ttl=remember_seconds, limit=max_remembered, clock=answer_clock
        )

    def unsafe(self, address: str) -> str | None:
        return unsafe_address(address)

    def location(self, address: str) -> str:
        return str(self.path_for(address))

    def prepare(self) -> None:
        """Make the folder at start-up. One that cannot be made (a file in the way, a missing
        mount, no permission) is the operator's to fix: a configuration error naming the key,
        rather than a bare errno that does not say which setting the path came from."""
        try:
            self.ensure()
        except OSError as exc:
            raise ConfigError(
                f"user-certs-dir: cannot create {self.folder}: {exc.strerror or exc}"
            ) from None

    def close(self) -> None:
        self.index.close()
        self.answers.close()

    def ensure(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)

    def path_for(self, address: str) -> Path:
        return self.folder / f"{address.lower()}.crt"

    def get(self, address: str) -> x509.Certificate | None:
        address = normal_address(address)
        if not address or unsafe_address(address):
            return None
        try:
            return self.read(address)
        except OSError as exc:
            raise StoreUnavailable(f"cannot read {self.path_for(address)}: {exc}") from exc

    def read(self, address: str) -> x509.Certificate | None:
        """The stored certificate, never following a symlink planted at its name."""
        data = _read_nofollow(self.path_for(address))
        if data is None:
            return None
        try:
            if len(data) <= MAX_CACHED_PEM_BYTES:
                return _load_pem(data)
            return x509.load_pem_x509_certificate(data)
        except CORRUPT_CERTIFICATE:
            return None  # a damaged file is replaced by a good certificate, never trusted

    def get_der(self, address: str) -> bytes | None:
        """The stored certificate's exact bytes (what arrived), never following a symlink."""
        address = normal_address(address)
        if not address or unsafe_address(address):
            return None
        try:
            return _pem_to_der(self.path_for(address))
        except OSError as exc:
            raise StoreUnavailable(f"cannot read {self.path_for(address)}: {exc}") from exc

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
        address = normal_address(address)
        if not address or unsafe_address(address):
            return []
        try:
            data = (self.folder / CHAINS / f"{address}.pem").read_bytes()
            return [
                der
                for kind, _, der in asn1_pem.unarmor(data, multiple=True)
                if kind == "CERTIFICATE"
            ]
        except (OSError, ValueError, TypeError):
            return []

    def _marker(self, address: str, cert: x509.Certificate) -> Path:
        return self.folder / HISTORY / marker_name(normal_address(address), _fingerprint(cert))

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
        self.index.mark_revoked(address, fingerprint(cert))

    def _marker_found(self, address: str, sha256: str) -> tuple[datetime, str] | None:
        """When a revoked marker says its certificate was found revoked, and why; ``None``
        without one (markers written before the journal existed count as its entries)."""
        data = _read_nofollow(self.folder / HISTORY / marker_name(address, sha256))
        if data is None:
            return None
        try:
            marker = json.loads(data)
            return parse_stamp(str(marker["found"])), str(marker.get("detail", ""))
        except (ValueError, KeyError, TypeError, AttributeError):
            return None

    def retire_revoked(self, address: str, cert: x509.Certificate, detail: str) -> bool:
        """Move ``cert`` out of ``<address>.crt`` into ``.history/`` with its marker. False
        when the file no longer holds ``cert`` or cannot be changed."""
        address = address.lower()
        try:
            with self._locked(address):
                if self.read(address) != cert:
                    return False
                self._keep_history(address, cert, self.get_der(address) or _der(cert))
                self.mark_revoked(address, cert, detail)
                now = datetime.now(UTC)
                self._journal(address, [HistoryEntry.of(cert, Why.REVOKED, now, detail)])
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
            with self._locked(address):  # makes the folder when it is missing
                if self.is_revoked(address, cert):
                    return StoreResult(
                        Check.fail(Reason.REVOKED, "this certificate was found revoked earlier")
                    )
                result = self._save_locked(address, cert, current_revoked, der or _der(cert))
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
        now = datetime.now(UTC)
        if decision is Decision.REFUSE_OLDER:
            self._journal(address, [HistoryEntry.of(cert, Why.REFUSED_OLDER, now, why)])
            return StoreResult(Check.fail(Reason.OLDER_THAN_STORED, why))
        if current is not None:
            # History first: a crash before the new file is in place repeats an entry on the
            # retry, and never loses one.
            self._keep_history(address, current, self.get_der(address) or _der(current))
            kind = Why.REVOKED if current_revoked else Why.REPLACED
            self._journal(address, [HistoryEntry.of(current, kind, now, why)])
        data = pem_of(der)
        before = os.stat(self.folder).st_mtime_ns
        self._write_atomic(self.folder, path.name, data)
        after = os.stat(self.folder).st_mtime_ns
        self.index.record(address, cert, os.stat(path, follow_symlinks=False), before, after)
        return StoreResult(Check.passed("stored"), True, str(path), len(data))

    def list(self, expiring_before: datetime | None = None) -> list[Entry]:
        """Every stored certificate (sorted by address), optionally only those expiring soon,
        from the sidecar index; from the files themselves only when the index is unusable."""
        try:
            if not self.folder.is_dir():
                return []
            return self.index.entries(expiring_before)
        except IndexUnusable as exc:
            log.warning("listing without the certificate index: %s", exc)
        except OSError as exc:
            raise StoreUnavailable(f"cannot list {self.folder}: {exc}") from exc
        return self._list_files(expiring_before)

    def _list_files(self, expiring_before: datetime | None) -> list[Entry]:
        """The listing from the files alone: slow, for a folder the index cannot live in."""
        try:
            paths = sorted(self.folder.glob("*.crt"))
        except OSError as exc:
            raise StoreUnavailable(f"cannot list {self.folder}: {exc}") from exc
        entries: list[Entry] = []
        for path in paths:
            if path.name.startswith(".") or path.is_symlink():
                continue
            try:
                cert = x509.load_pem_x509_certificate(path.read_bytes())
            except (OSError, *CORRUPT_CERTIFICATE):
                continue
            if expiring_before is not None and cert.not_valid_after_utc > expiring_before:
                continue
            if self.is_revoked(path.name.removesuffix(".crt"), cert):
                continue  # never listed, even if it came back
            entries.append(
                Entry(
                    path.name.removesuffix(".crt"),
                    cert.issuer.rfc4514_string(),
                    cert.not_valid_after_utc,
                    fingerprint(cert),
                )
            )
        return entries

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
        """Count, expiring and earliest notAfter, in SQL over the index."""
        try:
            if not self.folder.is_dir():
                return StoreStats(0, 0, None)
            return self.index.stats(expiring_before)
        except IndexUnusable as exc:
            log.warning("counting without the certificate index: %s", exc)
        except OSError as exc:
            raise StoreUnavailable(f"cannot list {self.folder}: {exc}") from exc
        entries = self._list_files(None)  # the index just failed: not a second attempt
        expiring = 0
        if expiring_before is not None:
            expiring = sum(1 for e in entries if e.not_after <= expiring_before)
        return StoreStats(len(entries), expiring, min((e.not_after for e in entries), default=None))

    def record(self, entry: JournalEntry) -> None:
        self.journal.append(entry)

    def verdicts(
        self, text: str = "", outcome: str = "", offset: int = 0, limit: int = 50
    ) -> JournalPage:
        return self.journal.page(text, outcome, offset, limit)

    def verdict_counts(self, since: datetime) -> Counter[tuple[str, str]]:
        return self.journal.counts(since)

    def recall_answer(self, door: str, key: str) -> Verdict | None:
        return self.answers.recall(door, key)

    def remember_answer(self, door: str, key: str, verdict: Verdict) -> None:
        self.answers.remember(door, key, verdict)

    def _keep_history(self, address: str, cert: x509.Certificate, der: bytes) -> None:
        """Keep ``cert`` (whose exact bytes are ``der``) under ``.history/``."""
        history = self.folder / HISTORY
        history.mkdir(exist_ok=True)
        name = f"{address}.{fingerprint(cert)}.crt"
        if not (history / name).exists():
            self._write_atomic(history, name, pem_of(der))

    def _journal(self, address: str, entries: Iterable[HistoryEntry]) -> None:
        """Append entries to the address's journal, durably (the caller holds its lock)."""
        text = "".join(json.dumps(e.as_dict(), ensure_ascii=False) + "\n" for e in entries)
        if not text:
            return
        history = self.folder / HISTORY
        history.mkdir(exist_ok=True)
        path = history / f"{address}{JOURNAL}"
        created = not path.exists()
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, 0o644)
        try:
            os.write(fd, text.encode("utf-8"))
            os.fsync(fd)
        finally:
            os.close(fd)
        if created:
            _fsync_folder(history)

    # -- history, export and import ---------------------------------------------------------

    def history(self, address: str) -> list[HistoryEntry]:
        """The journal's entries, plus kept certificates no journal line names (folders from
        before the journal: ``revoked`` when a marker says so, else ``replaced`` at the copy's
        time), newest first."""
        address = normal_address(address)
        if not address or unsafe_address(address):
            return []
        try:
            return self._history(address, self._kept_files(address))
        except OSError as exc:
            raise StoreUnavailable(f"cannot read the history of {address}: {exc}") from exc

    def _history(self, address: str, kept: dict[str, Path]) -> list[HistoryEntry]:
        kept_der = {sha256: _pem_to_der(path) for sha256, path in kept.items()}
        entries = []
        for entry in _read_journal(self.folder / HISTORY / f"{address}{JOURNAL}"):
            der = kept_der.get(entry.sha256)
            cert = _load_der(der) if der is not None and not entry.issuer else None
            if cert is not None:  # a line that does not describe its certificate
                entry = HistoryEntry.of(cert, Why(entry.event), entry.at, entry.detail)
            entries.append(replace(entry, der=der))
        named = {e.sha256 for e in entries}
        for sha256, der in kept_der.items():
            if sha256 in named:
                continue  # the journal describes it
            cert = _load_der(der) if der is not None else None
            if cert is None:
                continue
            found = self._marker_found(address, sha256)
            if found is not None:
                entries.append(HistoryEntry.of(cert, Why.REVOKED, *found, der=der))
            else:
                when = datetime.fromtimestamp(kept[sha256].lstat().st_mtime, UTC)
                entries.append(
                    HistoryEntry.of(cert, Why.REPLACED, when, "kept before the journal", der)
                )
        oldest = datetime.min.replace(tzinfo=UTC)
        order = sorted(enumerate(entries), key=lambda ie: (ie[1].at or oldest, ie[0]))
        return [entry for _, entry in reversed(order)]

    def _kept_files(self, address: str) -> dict[str, Path]:
        """SHA-256 → ``.history/<address>.<sha256>.crt`` for one address."""
        history = self.folder / HISTORY
        prefix = f"{address}."
        try:
            names = [n for n in os.listdir(history) if n.startswith(prefix)]
        except FileNotFoundError:
            return {}
        found = {}
        for name in names:
            match = _KEPT.match(name)
            if match and match["address"] == address:
                found[match["sha256"]] = history / name
        return found

    def dump(self) -> Iterator[Record]:
        """Every address with a file or a history, sorted by address."""
        try:
            current = {
                n[:-4]
                for n in os.listdir(self.folder)
                if n.endswith(".crt") and not n.startswith(".")
            }
        except FileNotFoundError:
            return
        except OSError as exc:
            raise StoreUnavailable(f"cannot list {self.folder}: {exc}") from exc
        kept: dict[str, dict[str, Path]] = {}
        journals: set[str] = set()
        with contextlib.suppress(FileNotFoundError):
            for name in os.listdir(self.folder / HISTORY):
                if name.endswith(JOURNAL) and not name.startswith("."):
                    journals.add(name[: -len(JOURNAL)])
                elif match := _KEPT.match(name):
                    kept.setdefault(match["address"], {})[match["sha256"]] = (
                        self.folder / HISTORY / name
                    )
        for address in sorted(current | journals | kept.keys()):
            if unsafe_address(address):
                continue
            try:
                der = self.get_der(address) if address in current else None
                entries = self._history(address, kept.get(address, {}))
            except OSError as exc:
                raise StoreUnavailable(f"cannot read {address}: {exc}") from exc
            if der is not None or entries:
                yield Record(address, der, entries, self.chain(address) if der else [])

    def restore_history(self, address: str, entries: Iterable[HistoryEntry]) -> int:
        address = address.lower()
        if unsafe_address(address):
            return 0
        try:
            self.ensure()
            with self._locked(address):
                seen = {e.key for e in self._history(address, self._kept_files(address))}
                new = []
                for entry in entries:
                    if entry.key in seen:
                        continue
                    seen.add(entry.key)
                    if entry.der is not None and entry.event != Why.REFUSED_OLDER:
                        cert = x509.load_der_x509_certificate(entry.der)
                        self._keep_history(address, cert, entry.der)
                        if entry.event == Why.REVOKED and not self.is_revoked(address, cert):
                            self.mark_revoked(address, cert, entry.detail)
                    new.append(entry)
                self._journal(address, new)
                return len(new)
        except OSError as exc:
            raise StoreUnavailable(f"cannot write the history of {address}: {exc}") from exc

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
        """The address's lock, held inside; the folder and its ``.locks`` are made only when
        the lock file cannot be opened for their absence (not two ``mkdir`` per message)."""
        locks = self.folder / LOCKS
        lock = locks / f"{address}.lock"
        flags = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW
        try:
            fd = os.open(lock, flags, 0o600)
        except FileNotFoundError:
            self.ensure()
            locks.mkdir(exist_ok=True)
            fd = os.open(lock, flags, 0o600)
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


#: Certificate files read, parsed once per distinct content (up to a size no certificate
#: reaches): the same certificates are read again for every message their owners send.
_load_pem = functools.lru_cache(maxsize=256)(x509.load_pem_x509_certificate)
#: Fingerprints of the certificates saved, checked for a revocation marker on every save:
#: cryptography serialises a certificate anew for each fingerprint (11 µs).
_fingerprint = functools.lru_cache(maxsize=1024)(fingerprint)
MAX_CACHED_PEM_BYTES = 16 * 1024


def _fsync_folder(folder: Path) -> None:
    dir_fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _read_nofollow(path: Path) -> bytes | None:
    """A file's bytes, or ``None`` when it is missing or a symlink (never followed)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError as exc:
        if exc.errno in (errno.ENOENT, errno.ELOOP):
            return None
        raise
    with os.fdopen(fd, "rb") as handle:
        return handle.read()


def _pem_to_der(path: Path) -> bytes | None:
    """The exact DER bytes inside a PEM file (never following a symlink), or ``None``."""
    data = _read_nofollow(path)
    return None if data is None else _unarmor(data)


def _unarmor(data: bytes) -> bytes | None:
    """The DER bytes of one PEM certificate, exactly as armoured; ``None`` for anything else."""
    try:
        kind, _, der = asn1_pem.unarmor(data)
    except (ValueError, TypeError):
        return None
    return der if kind == "CERTIFICATE" else None


def _der(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(_DER)


def _load_der(der: bytes) -> x509.Certificate | None:
    try:
        return x509.load_der_x509_certificate(der)
    except CORRUPT_CERTIFICATE:
        return None


def _read_journal(path: Path) -> Iterator[HistoryEntry]:
    """A journal's entries, in the order written; a torn last line (crash while appending) or
    a foreign one is skipped."""
    data = _read_nofollow(path)
    if data is None:
        return
    for line in data.decode("utf-8", "replace").splitlines():
        if len(line) > MAX_JOURNAL_LINE:
            continue
        try:
            item = json.loads(line)
            yield HistoryEntry(
                sha256=str(item["sha256"]),
                issuer=str(item.get("issuer") or ""),
                not_before=_optional_stamp(item.get("not_before")),
                not_after=_optional_stamp(item.get("not_after")),
                event=Why(item["why"]),
                at=parse_stamp(str(item["when"])),
                detail=str(item.get("detail", "")),
            )
        except (ValueError, KeyError, TypeError, AttributeError):
            continue


def _optional_stamp(value: object) -> datetime | None:
    return parse_stamp(value) if isinstance(value, str) and value else None
