"""``readSMIMEsig.py --recheck``: validate every stored certificate again, as of now.

Path and revocation are checked with ``hard`` semantics (a status must be established), but
nothing is ever removed on a failure a retry could cure. A revoked certificate moves out of
``<address>.crt`` into ``.history/`` with a marker saying it was revoked and when, so the
lookup routes stop serving it and its owner's next certificate is never ``older-than-stored``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime

from cryptography import x509

from smime_collector import pathvalidation
from smime_collector.deadline import Deadline
from smime_collector.revocation import Revocation, Status
from smime_collector.store import CertStore
from smime_collector.trust import CORRUPT_CERTIFICATE, Anchors
from smime_collector.verdict import Check

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Recheck:
    """One stored certificate's state. ``transient``: unknown now, a retry could tell."""

    email: str
    state: str
    detail: str
    transient: bool = False

    def as_dict(self) -> dict[str, str]:
        return {"email": self.email, "state": self.state, "detail": self.detail}


def recheck_all(
    store: CertStore,
    anchors: Anchors,
    revocation: Revocation,
    allow_sha1: bool,
    now: datetime,
) -> list[Recheck]:
    return [
        recheck_one(store, address, anchors, revocation, allow_sha1, now)
        for address in store.addresses()
    ]


def recheck_one(
    store: CertStore,
    address: str,
    anchors: Anchors,
    revocation: Revocation,
    allow_sha1: bool,
    now: datetime,
) -> Recheck:
    der = store.get_der(address)
    try:
        cert = x509.load_der_x509_certificate(der) if der else None
    except CORRUPT_CERTIFICATE:
        cert = None
    if cert is None or der is None:
        return Recheck(address, "unknown", "the stored file is not a readable certificate")
    if now > cert.not_valid_after_utc:
        return Recheck(address, "expired", f"expired {cert.not_valid_after_utc:%Y-%m-%d}")
    chain: list[x509.Certificate] = []
    der_of = {cert: der}
    for issuer_der in store.chain(address):
        try:
            issuer = x509.load_der_x509_certificate(issuer_der)
        except CORRUPT_CERTIFICATE:
            continue
        chain.append(issuer)
        der_of[issuer] = issuer_der
    found = pathvalidation.validate(cert, [cert, *chain], anchors, now, allow_sha1, der_of)
    if isinstance(found, Check):
        if found.reason == "expired":
            return Recheck(address, "expired", found.detail)
        return Recheck(address, "unknown", f"{found.reason}: {found.detail}")
    bag = [der_of[c] for c in [cert, *chain]]
    finding = revocation.status(found, bag, [], anchors, now, allow_sha1, Deadline.never())
    if finding.status is Status.GOOD:
        return Recheck(address, "valid", finding.detail)
    if finding.status is Status.REVOKED:
        store.retire_revoked(address, cert, finding.detail)
        log.info("| recheck: %s is revoked (%s); moved to .history/", address, finding.detail)
        return Recheck(address, "revoked", finding.detail)
    return Recheck(
        address, "unknown", finding.detail, transient=finding.status is Status.UNAVAILABLE
    )


def exit_code(results: list[Recheck]) -> int:
    """1 when something was revoked or expired, 75 when a check failed in a way a retry
    could cure, 0 otherwise."""
    if any(r.state in ("revoked", "expired") for r in results):
        return 1
    if any(r.transient for r in results):
        return 75
    return 0
