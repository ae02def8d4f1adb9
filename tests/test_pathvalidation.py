"""RFC 5280 path validation beyond what PKITS covers, with the S/MIME rules on top.

Real certificates made with ``cryptography`` (and asn1crypto where a field cannot be had
otherwise, such as a version-1 root), real messages signed by ``openssl cms``, judged by the
real collector with revocation off (``tests/test_revocation.py`` covers revocation).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest
from asn1crypto import keys as asn1_keys
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from smime_collector import pathvalidation
from smime_collector.trust import load_anchors
from smime_collector.verdict import Verdict
from tests import pki
from tests.revocation_pki import now, signed_message
from webapp import create_app

ALICE = "alice@example.com"


def _name(cn: str, email: str | None = None) -> x509.Name:
    attrs = [x509.NameAttribute(NameOID.COMMON_NAME, cn)]
    if email:
        attrs.append(x509.NameAttribute(NameOID.EMAIL_ADDRESS, email))
    return x509.Name(attrs)


def make(
    cn: str,
    issuer: pki.Identity | None,
    *,
    ca: bool,
    email: str | None = None,
    san: Sequence[x509.GeneralName] | None = None,
    subject_email: str | None = None,
    constraints: x509.NameConstraints | None = None,
    valid: tuple[int, int] = (-30, 365),
    usage: x509.KeyUsage | None = None,
) -> pki.Identity:
    key = pki.new_key("rsa")
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(cn, subject_email))
        .issuer_name(issuer.cert.subject if issuer else _name(cn, subject_email))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now() + dt.timedelta(days=valid[0]))
        .not_valid_after(now() + dt.timedelta(days=valid[1]))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if usage is not None:
        pass
    elif ca:
        usage = pki.usage_extension(key_cert_sign=True, crl_sign=True)
    else:
        usage = pki.usage_extension(digital_signature=True, key_encipherment=True)
        builder = builder.add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION]), False
        )
    builder = builder.add_extension(usage, critical=True)
    names = list(san) if san is not None else ([x509.RFC822Name(email)] if email else [])
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(names), False)
    if constraints is not None:
        builder = builder.add_extension(constraints, critical=True)
    cert = builder.sign(issuer.key if issuer else key, hashes.SHA256())
    chain = [] if issuer is None else ([] if issuer.is_root else [issuer.cert]) + issuer.chain
    return pki.Identity(cert=cert, key=key, chain=chain)


@pytest.fixture
def judge(make_settings, tmp_path: Path) -> Callable[..., Verdict]:
    def run(raw: bytes, *anchors: x509.Certificate, **overrides: str) -> Verdict:
        bundle = tmp_path / "anchors.pem"
        bundle.write_bytes(pki.pem(*anchors))
        settings = make_settings(
            dkim="off", trusted_certs=str(bundle), revocation="off", **overrides
        )
        collector = create_app(settings).extensions["smime_collector"].collector
        return collector.read_smime_email(raw)

    return run


def outcome(verdict: Verdict) -> tuple[str, str]:
    return verdict.outcome.value, verdict.reason


def _resigned_with_sha1(cert: pki.Identity, issuer: pki.Identity) -> pki.Identity:
    """``cert`` signed again by ``issuer`` with sha1WithRSAEncryption (OpenSSL 3's certificate
    builder refuses SHA-1, a plain RSA signature does not)."""
    parsed = asn1_x509.Certificate.load(cert.cert.public_bytes(serialization.Encoding.DER))
    tbs = asn1_x509.TbsCertificate.load(parsed["tbs_certificate"].dump())
    tbs["signature"] = {"algorithm": "sha1_rsa"}
    signature = issuer.key.sign(tbs.dump(), padding.PKCS1v15(), hashes.SHA1())
    der = asn1_x509.Certificate(
        {
            "tbs_certificate": tbs,
            "signature_algorithm": {"algorithm": "sha1_rsa"},
            "signature_value": signature,
        }
    ).dump()
    return pki.Identity(x509.load_der_x509_certificate(der), cert.key, cert.chain)


def test_sha1_on_the_path_is_weak_unless_allowed(judge) -> None:
    root = make("SHA-1 Era Root", None, ca=True)
    inter = _resigned_with_sha1(make("SHA-1 Era CA", root, ca=True), root)
    alice = make(ALICE, inter, ca=False, email=ALICE)
    raw = signed_message(alice)
    assert outcome(judge(raw, root.cert)) == ("rejected", "weak-algorithm")
    assert outcome(judge(raw, root.cert, allow_sha1="yes")) == ("stored", "ok")


def _version1_root(cn: str) -> pki.Identity:
    """A self-signed version-1 certificate: no extensions at all, so no CA:TRUE."""
    key = pki.new_key("rsa")
    spki = asn1_keys.PublicKeyInfo.load(
        key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    name = asn1_x509.Name.build({"common_name": cn})
    start = now() - dt.timedelta(days=10)
    tbs = asn1_x509.TbsCertificate(
        {
            "version": "v1",
            "serial_number": 1,
            "signature": {"algorithm": "sha256_rsa"},
            "issuer": name,
            "validity": {
                "not_before": asn1_x509.Time(name="utc_time", value=start),
                "not_after": asn1_x509.Time(name="utc_time", value=start + dt.timedelta(days=3650)),
            },
            "subject": name,
            "subject_public_key_info": spki,
        }
    )
    signature = key.sign(tbs.dump(), padding.PKCS1v15(), hashes.SHA256())
    der = asn1_x509.Certificate(
        {
            "tbs_certificate": tbs,
            "signature_algorithm": {"algorithm": "sha256_rsa"},
            "signature_value": signature,
        }
    ).dump()
    return pki.Identity(cert=x509.load_der_x509_certificate(der), key=key)


def test_a_version_1_root_listed_as_an_anchor_works(judge) -> None:
    root = _version1_root("Old Version 1 Root")
    assert root.cert.version is x509.Version.v1
    alice = make(ALICE, root, ca=False, email=ALICE)
    assert outcome(judge(signed_message(alice), root.cert)) == ("stored", "ok")


def _limited_ca(root: pki.Identity) -> pki.Identity:
    permitted = [x509.RFC822Name("example.com")]
    return make(
        "Example Only CA",
        root,
        ca=True,
        constraints=x509.NameConstraints(permitted_subtrees=permitted, excluded_subtrees=None),
    )


def test_rfc822_constraints_bind_an_address_only_in_the_subject(judge) -> None:
    """A SAN without an rfc822Name used to let the subject's emailAddress escape the CA's
    rfc822Name constraint (RFC 5280 §4.2.1.10)."""
    root = make("Constraint Root", None, ca=True)
    ca = _limited_ca(root)
    victim = "ceo@victim.example"
    escape = make(
        victim,
        ca,
        ca=False,
        san=[x509.UniformResourceIdentifier("https://example.com/alice")],
        subject_email=victim,
    )
    verdict = judge(signed_message(pki.Identity(escape.cert, escape.key, escape.chain)), root.cert)
    assert outcome(verdict) == ("rejected", "untrusted")
    assert "victim.example" in verdict.detail
    no_san = make(victim, ca, ca=False, san=[], subject_email=victim)
    assert outcome(judge(signed_message(no_san), root.cert)) == ("rejected", "untrusted")
    inside = make(ALICE, ca, ca=False, san=[x509.DNSName("example.com")], subject_email=ALICE)
    assert outcome(judge(signed_message(inside), root.cert)) == ("stored", "ok")


def test_a_ca_certificate_is_never_stored_as_a_persons(judge) -> None:
    root = make("CA Leaf Root", None, ca=True)
    usage = pki.usage_extension(
        digital_signature=True, key_encipherment=True, key_cert_sign=True, crl_sign=True
    )
    ca_leaf = make(ALICE, root, ca=True, email=ALICE, usage=usage)
    verdict = judge(signed_message(ca_leaf), root.cert)
    assert outcome(verdict) == ("rejected", "wrong-key-usage")
    assert "CA:TRUE" in verdict.detail


def test_a_cached_path_is_not_used_outside_its_validity(tmp_path: Path) -> None:
    root = make("Cache Root", None, ca=True)
    alice = make(ALICE, root, ca=False, email=ALICE, valid=(-30, 10))
    bundle = tmp_path / "anchor.pem"
    bundle.write_bytes(root.cert_pem())
    anchors = load_anchors([bundle])
    first = pathvalidation.validate(alice.cert, [alice.cert], anchors, now(), False)
    assert isinstance(first, pathvalidation.ValidPath)
    again = pathvalidation.validate(alice.cert, [alice.cert], anchors, now(), False)
    assert again is first  # the same certificates, snapshot and window: the cached path
    later = pathvalidation.validate(
        alice.cert, [alice.cert], anchors, now() + dt.timedelta(days=11), False
    )
    assert not isinstance(later, pathvalidation.ValidPath)
    assert later.reason == "expired"
    other = load_anchors([bundle])  # another trust snapshot: validated afresh
    assert pathvalidation.validate(alice.cert, [alice.cert], other, now(), False) is not first
