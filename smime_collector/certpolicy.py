"""S/MIME certificate policy (RFC 8550, CA/B Forum S/MIME BR): may this certificate be stored?

A chain of small checks, each returning a :class:`Check` with a reason; the first failure
decides. Chains are built by ``cryptography.x509.verification`` with extension policies written
for S/MIME instead of the Web PKI: certificates such as NSS's (email only in the subject, no SAN,
no key identifiers, a non-critical basicConstraints on the CA) are accepted because nothing in
S/MIME requires those extensions, while every CA must still say ``CA:TRUE`` and every EKU present
must allow email protection.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from cryptography.x509.verification import (
    ClientVerifier,
    Criticality,
    ExtensionPolicy,
    Policy,
    PolicyBuilder,
    VerificationError,
)

from smime_collector.trust import Anchors, fingerprint
from smime_collector.verdict import Check

EMAIL_EKUS = {
    ExtendedKeyUsageOID.EMAIL_PROTECTION,
    ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE,
}
MIN_RSA_BITS = 2048
MAX_CHAIN_DEPTH = 8


class _PolicyViolation(ValueError):
    """Raised from extension validators; its text starts with the reason code."""


def _eku_allows_email(_policy: Policy, _cert: x509.Certificate, eku: object) -> None:
    if eku is not None and not EMAIL_EKUS.intersection(eku):  # type: ignore[arg-type]
        raise _PolicyViolation("wrong-key-usage: extended key usage excludes emailProtection")


def _is_ca(_policy: Policy, _cert: x509.Certificate, bc: x509.BasicConstraints) -> None:
    if not bc.ca:
        raise _PolicyViolation("untrusted: an issuer is not a CA (basicConstraints CA:FALSE)")


def _may_sign_certs(_policy: Policy, _cert: x509.Certificate, ku: object) -> None:
    if ku is not None and not ku.key_cert_sign:  # type: ignore[attr-defined]
        raise _PolicyViolation("untrusted: an issuer's keyUsage lacks keyCertSign")


def _ca_policy() -> ExtensionPolicy:
    return (
        ExtensionPolicy.permit_all()
        .require_present(x509.BasicConstraints, Criticality.AGNOSTIC, _is_ca)
        .may_be_present(x509.KeyUsage, Criticality.AGNOSTIC, _may_sign_certs)
        .may_be_present(x509.ExtendedKeyUsage, Criticality.AGNOSTIC, _eku_allows_email)
    )


def _ee_policy() -> ExtensionPolicy:
    return ExtensionPolicy.permit_all().may_be_present(
        x509.ExtendedKeyUsage, Criticality.AGNOSTIC, _eku_allows_email
    )


CA_POLICY = _ca_policy()
EE_POLICY = _ee_policy()


@dataclass(frozen=True)
class Candidate:
    """What the policy judges: a certificate, the certificates sent with it, and the context."""

    cert: x509.Certificate
    bag: list[x509.Certificate]
    anchors: Anchors
    at: datetime
    address: str


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
    ku = _extension(c.cert, x509.KeyUsage)
    if ku is not None and not (ku.digital_signature or ku.content_commitment):
        return Check.fail(
            "wrong-key-usage",
            "keyUsage allows neither digitalSignature nor nonRepudiation",
        )
    eku = _extension(c.cert, x509.ExtendedKeyUsage)
    if eku is not None and not EMAIL_EKUS.intersection(eku):
        return Check.fail("wrong-key-usage", "extended key usage excludes emailProtection")
    return Check.passed("usage allows email signing")


def check_key_strength(c: Candidate) -> Check:
    key = c.cert.public_key()
    if isinstance(key, (rsa.RSAPublicKey, dsa.DSAPublicKey)) and key.key_size < MIN_RSA_BITS:
        return Check.fail("weak-algorithm", f"{key.key_size}-bit key is below {MIN_RSA_BITS} bits")
    return Check.passed("key size acceptable")


@functools.lru_cache(maxsize=8)
def _verifier(anchors: Anchors, at: datetime) -> ClientVerifier:
    """Verifiers are immutable; one per anchor snapshot and second serves every message."""
    return (
        PolicyBuilder()
        .store(anchors.store)
        .time(at)
        .max_chain_depth(MAX_CHAIN_DEPTH)
        .extension_policies(ca_policy=CA_POLICY, ee_policy=EE_POLICY)
        .build_client_verifier()
    )


def check_chain(c: Candidate) -> Check:
    verifier = _verifier(c.anchors, c.at.replace(microsecond=0))
    try:
        chain = verifier.verify(c.cert, [cert for cert in c.bag if cert != c.cert]).chain
    except VerificationError as exc:
        return _explain_chain_failure(c, str(exc))
    root = chain[-1]
    limit = c.anchors.distrust_after.get(fingerprint(root))
    # NSS compares the end-entity certificate's notBefore with the root's distrust-after date.
    if limit is not None and c.cert.not_valid_before_utc > limit:
        return Check.fail(
            "untrusted",
            f"root {root.subject.rfc4514_string()} is distrusted for email certificates "
            f"issued after {limit:%Y-%m-%d}",
        )
    names = " -> ".join(_common_name(cert) for cert in chain)
    return Check.passed(f"chain {names}")


def _explain_chain_failure(c: Candidate, message: str) -> Check:
    for code in ("wrong-key-usage", "untrusted"):
        if f"{code}:" in message:
            return Check.fail(code, message.split(f"{code}:", 1)[1].split(")")[0].strip())
    if "validation time" in message:
        for cert in _issuers_above(c):
            check = _validity(cert, c.at, f"issuer {_common_name(cert)}")
            if not check.ok:
                return check
    return Check.fail("untrusted", f"no trusted chain: {message}")


def _issuers_above(c: Candidate) -> list[x509.Certificate]:
    """Every certificate that may sit above ``c.cert``, matched by name, from the message and
    the anchors: an expired root counts, an unrelated certificate sent along does not."""
    pool = [*c.bag, *c.anchors.roots]
    found: list[x509.Certificate] = []
    names = {c.cert.issuer}
    while names:
        above = [cert for cert in pool if cert.subject in names and cert not in found]
        found.extend(above)
        names = {cert.issuer for cert in above}
    return found


def emails_of(cert: x509.Certificate) -> list[str]:
    """SAN rfc822Name entries, else the subject's emailAddress attributes (RFC 8550 §3)."""
    san = _extension(cert, x509.SubjectAlternativeName)
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
    ku = _extension(c.cert, x509.KeyUsage)
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
    check_address,
)
ENCRYPTION_RULES: tuple[Rule, ...] = (
    check_validity,
    check_key_strength,
    check_chain,
    check_address,
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


def _extension(cert: x509.Certificate, kind: type) -> object | None:
    try:
        return cert.extensions.get_extension_for_class(kind).value
    except x509.ExtensionNotFound:
        return None


def _common_name(cert: x509.Certificate) -> str:
    cns = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(cns[0].value) if cns else cert.subject.rfc4514_string()


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
