"""Trust anchors, loaded once per process and reloaded when a bundle file changes.

``trusted-certs`` names one or more PEM bundles. A bundle may have a sidecar
``<bundle stem>.distrust.json`` (written by ``tools/certdata2pem.py``) carrying Mozilla's
``CKA_NSS_EMAIL_DISTRUST_AFTER`` dates, which a PEM file alone cannot express.
"""

from __future__ import annotations

import json
import os
import threading
import time
import warnings
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.utils import CryptographyDeprecationWarning
from cryptography.x509.verification import Store

#: What cryptography raises for a certificate it cannot read, now or when a field is first used.
CORRUPT_CERTIFICATE = (
    ValueError,
    TypeError,
    UnsupportedAlgorithm,
    x509.InvalidVersion,
    x509.DuplicateExtension,
    x509.UnsupportedGeneralNameType,
)


class TrustError(Exception):
    """A bundle cannot be read; raised at start-up as a configuration error."""


def sidecar_path(bundle: Path) -> Path:
    return bundle.with_name(bundle.stem + ".distrust.json")


def fingerprint(cert: x509.Certificate) -> str:
    return cert.fingerprint(hashes.SHA256()).hex()


@dataclass(frozen=True, eq=False)  # identity: one snapshot per load
class Anchors:
    """An immutable snapshot: the roots, a ready verifier store and the distrust-after dates."""

    roots: tuple[x509.Certificate, ...]
    store: Store
    distrust_after: dict[str, datetime] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.roots)


def load_anchors(paths: list[Path]) -> Anchors:
    roots: list[x509.Certificate] = []
    distrust: dict[str, datetime] = {}
    for path in paths:
        try:
            with warnings.catch_warnings():
                # Some long-lived roots carry serial number 0; they are still valid anchors.
                warnings.simplefilter("ignore", CryptographyDeprecationWarning)
                certs = x509.load_pem_x509_certificates(path.read_bytes())
        except (OSError, ValueError) as exc:
            raise TrustError(f"cannot load trust bundle {path}: {exc}") from None
        roots.extend(certs)
        distrust.update(_load_sidecar(sidecar_path(path)))
    if not roots:
        raise TrustError("no trust anchors loaded")
    return Anchors(tuple(roots), Store(roots), distrust)


def _load_sidecar(path: Path) -> dict[str, datetime]:
    if not path.exists():
        return {}
    try:
        data = json.loads(path.read_text("utf-8"))
        return {
            sha.lower(): datetime.fromisoformat(entry["date"].replace("Z", "+00:00"))
            for sha, entry in data.get("email_distrust_after", {}).items()
        }
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise TrustError(f"cannot read distrust-after sidecar {path}: {exc}") from None


class TrustAnchors:
    """The process-wide anchors; ``current()`` reloads when a bundle's mtime or size changes."""

    def __init__(self, paths: list[Path], check_interval: float = 2.0) -> None:
        self.paths = paths
        self.check_interval = check_interval
        self._lock = threading.Lock()
        self._stamp = self._stat()
        self._anchors = load_anchors(paths)
        self._checked = time.monotonic()

    def _stat(self) -> tuple[tuple[int, int], ...]:
        stamps = []
        for path in self.paths:
            for candidate in (path, sidecar_path(path)):
                try:
                    st = os.stat(candidate)
                    stamps.append((st.st_mtime_ns, st.st_size))
                except OSError:
                    stamps.append((0, 0))
        return tuple(stamps)

    def current(self) -> Anchors:
        now = time.monotonic()
        if now - self._checked < self.check_interval:
            return self._anchors
        with self._lock:
            self._checked = now
            stamp = self._stat()
            if stamp != self._stamp:
                try:
                    self._anchors = load_anchors(self.paths)
                    self._stamp = stamp
                except TrustError:
                    pass  # keep serving with the anchors we have; a half-written file is no reason
        return self._anchors
