"""Read-only views of the certificate folder for the sending side: one PEM, or a listing."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from smime_collector.certstore import CertStore, unsafe_address
from smime_collector.trust import CORRUPT_CERTIFICATE, fingerprint

_DURATION = re.compile(r"^\s*(\d{1,6})\s*([dhm]?)\s*$")
_UNITS = {"d": "days", "": "days", "h": "hours", "m": "minutes"}


def parse_duration(text: str) -> timedelta | None:
    """``30d``, ``12h``, ``90m`` or a bare number of days; ``None`` when it is none of these."""
    match = _DURATION.match(text)
    if not match:
        return None
    return timedelta(**{_UNITS[match[2]]: int(match[1])})


@dataclass(frozen=True)
class Entry:
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


def stored_pem(store: CertStore, address: str) -> bytes | None:
    """The stored certificate for ``address`` (normalised like the store does), or ``None``."""
    address = address.strip().lower()
    if not address or unsafe_address(address):
        return None
    cert = store.read(address)  # never follows a symlink
    return None if cert is None else cert.public_bytes(serialization.Encoding.PEM)


def listing(store: CertStore, expiring_before: datetime | None = None) -> list[Entry]:
    """Every stored certificate (sorted by address), optionally only those expiring soon."""
    entries = []
    if not store.folder.is_dir():
        return entries
    for path in sorted(store.folder.glob("*.crt")):
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
