"""An in-memory index of the certificate folder: listings without parsing every file each time.

``/metrics`` reads the store's count and earliest expiry on every scrape, and the operator page
pages and searches the list. Parsing every ``.crt`` for each of those would cost a second per
100,000 certificates. The index remembers each file's entry under its inode, modification time
and size, re-reads the folder only when the folder itself changed (every store write renames a
file into it, which changes its modification time), and parses only files it has not seen.
The history folder is watched too: a certificate found revoked gets a marker there and is no
longer listed, even while its file is still in place.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

from cryptography import x509

from smime_collector.store.base import Entry
from smime_collector.trust import CORRUPT_CERTIFICATE, fingerprint

#: A folder changed this recently may change again within the same clock tick, unseen by its
#: modification time: such a snapshot is used once and then checked again.
SETTLE_NS = 2_000_000_000

_FileKey = tuple[int, int, int]  # inode, mtime_ns, size


class FolderIndex:
    """The entries of ``<address>.crt`` files in a folder, sorted by address."""

    def __init__(self, folder: Path, history: Path, marker_suffix: str) -> None:
        self.folder = folder
        self.history = history
        #: ``<history>/<address>.<sha256><marker_suffix>`` says a certificate was revoked.
        self.marker_suffix = marker_suffix
        self._files: dict[str, tuple[_FileKey, Entry | None]] = {}
        self._stamp: tuple[int, int, int] | None = None
        self._settled = False
        self._sorted: list[Entry] = []
        self._lock = threading.Lock()

    def entries(self) -> list[Entry]:
        with self._lock:
            started = time.time_ns()
            try:
                stat = os.stat(self.folder)
            except FileNotFoundError:
                self._files, self._stamp, self._sorted = {}, None, []
                return []
            try:
                history = os.stat(self.history).st_mtime_ns
            except FileNotFoundError:
                history = 0
            stamp = (stat.st_ino, stat.st_mtime_ns, history)
            if stamp != self._stamp or not self._settled:
                self._rescan()
                self._stamp = stamp
                self._settled = started - max(stat.st_mtime_ns, history) > SETTLE_NS
            return self._sorted

    def _rescan(self) -> None:
        files: dict[str, tuple[_FileKey, Entry | None]] = {}
        with os.scandir(self.folder) as scan:
            for item in scan:
                name = item.name
                if name.startswith(".") or not name.endswith(".crt"):
                    continue
                try:
                    if item.is_symlink() or not item.is_file(follow_symlinks=False):
                        continue
                    stat = item.stat(follow_symlinks=False)
                except OSError:
                    continue
                key = (stat.st_ino, stat.st_mtime_ns, stat.st_size)
                known = self._files.get(name)
                files[name] = known if known and known[0] == key else (key, _read(item.path, name))
        self._files = files
        markers = self._markers()
        live = (
            e
            for _key, e in files.values()
            if e and f"{e.email}.{e.sha256}{self.marker_suffix}" not in markers
        )
        self._sorted = sorted(live, key=lambda e: e.email)

    def _markers(self) -> set[str]:
        try:
            return {n for n in os.listdir(self.history) if n.endswith(self.marker_suffix)}
        except FileNotFoundError:
            return set()


def _read(path: str, name: str) -> Entry | None:
    try:
        with open(path, "rb") as handle:
            cert = x509.load_pem_x509_certificate(handle.read())
    except (OSError, *CORRUPT_CERTIFICATE):
        return None
    return Entry(
        name.removesuffix(".crt"),
        cert.issuer.rfc4514_string(),
        cert.not_valid_after_utc,
        fingerprint(cert),
    )
