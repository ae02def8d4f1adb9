"""S/MIME certificate policy (RFC 8550, CA/B Forum S/MIME BR): may this certificate be stored?

A chain of small checks, each returning a :class:`Check` with a reason; the first failure
decides. The path is validated as RFC 5280 §6 says (:mod:`smime_collector.pathvalidation`:
policies, name constraints, normalised names), then checked for revocation
(:mod:`smime_collector.revocation`), and only then bound to the From: address, so that an
address check never hides a revoked certificate.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, rsa
from cryptography.x509.oid import NameOID

from smime_collector import pathvalidation
from smime_collector.deadline import Deadline
from smime_collector.pathvalidation import EMAIL_EKUS, MIN_RSA_BITS, ValidPath, extension
from smime_collector.revocation import Revocation
from smime_collector.trust import Anchors
from smime_collector.verdict import Check


@dataclass
class Candidate:
    """What the policy judges: a certificate, what the message sent with it (certificates
    as their exact bytes, CRLs), and the context. ``path`` is filled in by the chain check."""

    cert: x509.Certificate
    bag: list[x509.Certificate]
    anchors: Anchors
    at: datetime
    address: str
    allow_sha1: bool = False
    der_of: dict[x509.Certificate, bytes] = field(default_factory=dict)
    crls: list[bytes] = field(default_factory=list)
    revocation: Revocation | None = None
    deadline: Deadline = field(default_factory=Deadline.never)
    path: ValidPath | None = None

    def der(self, cert: x509.Certificate) -> bytes:
        return pathvalidation.exact_der(cert, self.der_of)


Rule = Callable[[Candidate], Check]


def check_validity(c: Candidate) -> Check:
    return _validity(c.cert, c.at, "the certificate")


def _validity(cert: x509.Certificate, at: datetime, what: str) -> Check:
    if at < cert.not_valid_before_utc:
        return Check.fail(
            "not-yet-valid",
            f"{what} is valid from {cert.not_valid_before_utc:%Y-%m-%d %H:%M:%S}",
        )
    if at > cert.not_valid_after_utc:
        return Check.fail("expired", f"{what} expired {cert.not_valid_after_utc:%Y-%m-%d %H:%M:%S}")
    return Check.passed(f"valid at {at:%Y-%m-%d %H:%M:%S}")


def check_signing_usage(c: Candidate) -> Check:
    """The signer's certificate must allow signing email."""
    ku = extension(c.cert, x509.KeyUsage)
    if ku is not None and not (ku.digital_signature or ku.content_commitment):
        return Check.fail(
            "wrong-key-usage",
            "keyUsage allows neither digitalSignature nor nonRepudiation",
        )
    eku = extension(c.cert, x509.ExtendedKeyUsage)
    if eku is not None and not EMAIL_EKUS.intersection(eku):
        return Check.fail("wrong-key-usage", "extended key usage excludes emailProtection")
    return Check.passed("usage allows email signing")


def check_key_strength(c: Candidate) -> Check:
    key = c.cert.public_key()
    if isinstance(key, (rsa.RSAPublicKey, dsa.DSAPublicKey)) and key.key_size < MIN_RSA_BITS:
        return Check.fail("weak-algorithm", f"{key.key_size}-bit key is below {MIN_RSA_BITS} bits")
    return Check.passed("key size acceptable")


def check_not_a_ca(c: Candidate) -> Check:
    """A CA certificate is never stored as a person's certificate, whatever else it allows."""
    bc = extension(c.cert, x509.BasicConstraints)
    if bc is not None and bc.ca:
        return Check.fail("wrong-key-usage", "the certificate is a CA certificate (CA:TRUE)")
    return Check.passed("an end-entity certificate")


def check_chain(c: Candidate) -> Check:
    found = pathvalidation.validate(c.cert, c.bag, c.anchors, c.at, c.allow_sha1, c.der_of)
    if isinstance(found, Check):
        return found
    root = found.anchor
    limit = c.anchors.distrust_after.get(found.anchor_fingerprint) if root is not None else None
    # NSS compares the end-entity certificate's notBefore with the root's distrust-after date.
    if root is not None and limit is not None and c.cert.not_valid_before_utc > limit:
        return Check.fail(
            "untrusted",
            f"root {root.subject.rfc4514_string()} is distrusted for email certificates "
            f"issued after {limit:%Y-%m-%d}",
        )
    c.path = found
    return Check.passed(f"chain {found.names()}")


def check_revocation(c: Candidate) -> Check:
    if c.revocation is None or c.path is None:
        return Check.passed("revocation not checked")
    return c.revocation.check(
        c.path,
        [c.der(cert) for cert in c.bag],
        c.crls,
        c.anchors,
        c.at,
        c.allow_sha1,
        c.deadline,
    )


def emails_of(cert: x509.Certificate) -> list[str]:
    """SAN rfc822Name entries, else the subject's emailAddress attributes (RFC 8550 §3)."""
    san = extension(cert, x509.SubjectAlternativeName)
    if san is not None:
        names = san.get_values_for_type(x509.RFC822Name)
        if names:
            return names
    return [str(a.value) for a in cert.subject.get_attributes_for_oid(NameOID.EMAIL_ADDRESS)]


def check_address(c: Candidate) -> Check:
    emails = emails_of(c.cert)
    if c.address.lower() in (e.lower() for e in emails):
        return Check.passed(f"certificate is for {c.address.lower()}")
    return Check.fail(
        "email-mismatch",
        f"certificate is for {emails or 'no address'}, message is from {c.address}",
    )


def check_encryption_usage(c: Candidate) -> Check:
    """The stored certificate must let the application encrypt to it."""
    key = c.cert.public_key()
    ku = extension(c.cert, x509.KeyUsage)
    if isinstance(key, rsa.RSAPublicKey):
        if ku is None or ku.key_encipherment:
            return Check.passed("RSA key usable for key transport")
        return Check.fail("wrong-key-usage", "RSA certificate without keyEncipherment")
    if isinstance(key, ec.EllipticCurvePublicKey):
        if ku is None or ku.key_agreement:
            return Check.passed("EC key usable for key agreement")
        return Check.fail("wrong-key-usage", "EC certificate without keyAgreement")
    return Check.fail("wrong-key-usage", f"{key_type(c.cert)} keys cannot receive encrypted mail")


SIGNER_RULES: tuple[Rule, ...] = (
    check_validity,
    check_signing_usage,
    check_key_strength,
    check_chain,
    check_revocation,
    check_address,
    check_not_a_ca,
)
ENCRYPTION_RULES: tuple[Rule, ...] = (
    check_validity,
    check_key_strength,
    check_chain,
    check_revocation,
    check_address,
    check_not_a_ca,
    check_encryption_usage,
)


def judge(c: Candidate, rules: tuple[Rule, ...], log: Callable[[str], None]) -> Check:
    """Run the rules in order, logging each result; the first failure is the answer."""
    for rule in rules:
        check = rule(c)
        name = rule.__name__.removeprefix("check_")
        log(f"| check {name}: {'ok' if check.ok else 'FAIL ' + check.reason},{check.detail}")
        if not check.ok:
            return check
    return Check.passed()


def key_type(cert: x509.Certificate) -> str:
    key = cert.public_key()
    if isinstance(key, rsa.RSAPublicKey):
        return "RSA"
    if isinstance(key, ec.EllipticCurvePublicKey):
        return f"EC-{key.curve.name}"
    if isinstance(key, ed25519.Ed25519PublicKey):
        return "Ed25519"
    if isinstance(key, ed448.Ed448PublicKey):
        return "Ed448"
    return type(key).__name__


def key_bits(cert: x509.Certificate) -> int:
    key = cert.public_key()
    if isinstance(key, ed25519.Ed25519PublicKey):
        return 256
    if isinstance(key, ed448.Ed448PublicKey):
        return 456
    return getattr(key, "key_size", 0)
