"""Read-only views of the store for the sending side: one PEM, or a listing."""

from __future__ import annotations

import re
from datetime import timedelta

from cryptography import x509

from smime_collector.store import CertStore
from smime_collector.store.base import normal_address
from smime_collector.store.folder import pem_of
from smime_collector.trust import CORRUPT_CERTIFICATE

_DURATION = re.compile(r"^\s*(\d{1,6})\s*([dhm]?)\s*$")
_UNITS = {"d": "days", "": "days", "h": "hours", "m": "minutes"}


def parse_duration(text: str) -> timedelta | None:
    """``30d``, ``12h``, ``90m`` or a bare number of days; ``None`` when it is none of these."""
    match = _DURATION.match(text)
    if not match:
        return None
    return timedelta(**{_UNITS[match[2]]: int(match[1])})


def stored_pem(store: CertStore, address: str) -> bytes | None:
    """The stored certificate for ``address`` as PEM of exactly the bytes that arrived, or
    ``None``; never a certificate known to be revoked."""
    address = normal_address(address)
    der = store.get_der(address)
    if der is None:
        return None
    try:
        cert = x509.load_der_x509_certificate(der)
    except CORRUPT_CERTIFICATE:
        return None
    if store.is_revoked(address, cert):
        return None
    return pem_of(der)
