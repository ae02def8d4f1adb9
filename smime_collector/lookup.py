"""Read-only views of the store for the sending side: one PEM, or a listing."""

from __future__ import annotations

import re
from datetime import timedelta

from cryptography.hazmat.primitives import serialization

from smime_collector.store import CertStore

_DURATION = re.compile(r"^\s*(\d{1,6})\s*([dhm]?)\s*$")
_UNITS = {"d": "days", "": "days", "h": "hours", "m": "minutes"}


def parse_duration(text: str) -> timedelta | None:
    """``30d``, ``12h``, ``90m`` or a bare number of days; ``None`` when it is none of these."""
    match = _DURATION.match(text)
    if not match:
        return None
    return timedelta(**{_UNITS[match[2]]: int(match[1])})


def stored_pem(store: CertStore, address: str) -> bytes | None:
    """The stored certificate for ``address`` as PEM, or ``None``."""
    cert = store.get(address)
    return None if cert is None else cert.public_bytes(serialization.Encoding.PEM)
