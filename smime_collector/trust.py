"""Trust anchors, loaded once per process and reloaded when a bundle file changes.

``trusted-certs`` names one or more PEM bundles. A bundle may have a sidecar
``<bundle stem>.distrust.json`` (written by ``tools/certdata2pem.py``) carrying Mozilla's
``CKA_NSS_EMAIL_DISTRUST_AFTER`` dates, which a PEM file alone cannot express.

Each snapshot also holds the trust manager RFC 5280 path validation needs
(:mod:`smime_collector.pathvalidation`): building it over ~150 roots costs milliseconds, so it
is built once per snapshot, never per message.
"""

from __future__ import annotations

import json
import os
import threading
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from asn1crypto import pem as asn1_pem
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.utils import CryptographyDeprecationWarning
from pyhanko_certvalidator.authority import Authority, CertTrustAnchor, TrustAnchor
from pyhanko_certvalidator.registry import SimpleTrustManager, TrustManager

from smime_collector.rawcms import exact_certificate

#: What cryptography raises for a certificate it cannot read, now or when a field is first used.
CORRUPT_CERTIFICATE = (
    ValueError,
    TypeError,
    UnsupportedAlgorithm,
    x509.InvalidVersion,
    x509.DuplicateExtension,
    x509.UnsupportedGeneralNameType,
)


#: The configuration key the bundles come from: every start-up error names it.
KEY = "trusted-certs"


class TrustError(Exception):
    """A bundle cannot be read; raised at start-up as a configuration error naming
    :data:`KEY`."""


def sidecar_path(bundle: Path) -> Path:
    return bundle.with_name(bundle.stem + ".distrust.json")


def fingerprint(cert: x509.Certificate) -> str:
    return cert.fingerprint(hashes.SHA256()).hex()


@dataclass(frozen=True, eq=False)  # identity: one snapshot per load, a key for caches
class Anchors:
    """An immutable snapshot: the roots, their trust manager and the distrust-after dates."""

    roots: tuple[x509.Certificate, ...]
    trust_manager: SharedTrust
    distrust_after: dict[str, datetime] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.roots)


class SharedTrust(TrustManager):
    """The snapshot's trust manager, shared by every message's validation context.

    pyhanko copies every root of a :class:`SimpleTrustManager` into each context's certificate
    registry, normalising each root's name on the way: with ~150 roots that costs more than
    validating the path. Behind this wrapper the roots stay in the one manager built per
    snapshot; a context's registry holds only what the message brought (and the path's own
    anchor, for CRLs that anchor signs).
    """

    def __init__(self, inner: SimpleTrustManager) -> None:
        self._inner = inner

    def is_root(self, cert: asn1_x509.Certificate) -> bool:
        return self._inner.is_root(cert)

    def as_trust_anchor(self, authority: Authority) -> TrustAnchor | None:
        return self._inner.as_trust_anchor(authority)

    def find_potential_issuers(self, cert: asn1_x509.Certificate) -> Iterator[TrustAnchor]:
        return self._inner.find_potential_issuers(cert)

    def iter_certs(self) -> Iterator[asn1_x509.Certificate]:
        return self._inner.iter_certs()


def _trust_manager(ders: list[bytes]) -> SharedTrust:
    """RFC 5280 §6.1.1(d): an anchor is a name and a key. A version-1 root carries no
    extensions to read, and none are asked of it; the S/MIME rules check the certificates
    below it."""
    anchors = [CertTrustAnchor(exact_certificate(der)) for der in ders]
    return SharedTrust(SimpleTrustManager.build(trust_roots=anchors))


def _pem_blocks(data: bytes) -> list[bytes]:
    """The DER of every CERTIFICATE block, exactly as the bundle holds it."""
    return [der for kind, _, der in asn1_pem.unarmor(data, multiple=True) if kind == "CERTIFICATE"]


def load_anchors(paths: list[Path]) -> Anchors:
    roots: list[x509.Certificate] = []
    ders: list[bytes] = []
    distrust: dict[str, datetime] = {}
    for path in paths:
        try:
            data = path.read_bytes()
            with warnings.catch_warnings():
                # Some long-lived roots carry serial number 0; they are still valid anchors.
                warnings.simplefilter("ignore", CryptographyDeprecationWarning)
                certs = x509.load_pem_x509_certificates(data)
            blocks = _pem_blocks(data)
        except (OSError, ValueError, TypeError) as exc:
            why = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
            raise TrustError(f"{KEY}: cannot load trust bundle {path}: {why}") from None
        roots.extend(certs)
        ders.extend(blocks)
        distrust.update(_load_sidecar(sidecar_path(path)))
    if not roots:
        raise TrustError(f"{KEY}: no trust anchors loaded")
    try:
        manager = _trust_manager(ders)
    except (ValueError, TypeError, KeyError) as exc:
        raise TrustError(f"{KEY}: cannot use a trust anchor: {exc}") from None
    return Anchors(tuple(roots), manager, distrust)


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
        raise TrustError(f"{KEY}: cannot read distrust-after sidecar {path}: {exc}") from None


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
