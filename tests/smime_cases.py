"""Generated S/MIME material for ``tests/test_smime_generated.py``.

Everything here is a real artefact: certificates made with ``cryptography`` (through
:mod:`tests.pki` for end entities), signatures made by the ``openssl cms`` / ``openssl smime``
tools. Where OpenSSL cannot produce the structure a case needs (SMIMEEncryptionKeyPreference,
a chosen signingTime, a signature hash other than the digest algorithm, unsorted signed
attributes, Ed25519 on OpenSSL 3.0), :func:`build_signed_data` assembles the CMS SignedData with
``asn1crypto`` and signs it with ``cryptography``.

:class:`World` holds every identity the cases use; each is made on first use and kept for the
whole test module, because key generation dominates the run time.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import tempfile
from collections.abc import Sequence
from functools import cached_property
from pathlib import Path
from typing import Literal, Unpack

from asn1crypto import cms
from asn1crypto import core as asn1
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from tests import pki

ALICE = "alice@example.com"
BOB = "bob@example.com"
DKIM_DOMAIN = "dkim.smime-generated.example"
CAROL = f"carol@{DKIM_DOMAIN}"
TEXT = "Hello there, this is a signed message.\nIts second line.\n"

SMIME_KEY_PREFERENCE = "1.2.840.113549.1.9.16.2.11"
MS_KEY_PREFERENCE = "1.3.6.1.4.1.311.16.4"
SIGNATURE_PROTOCOL = "application/pkcs7-signature"
X_SIGNATURE_PROTOCOL = "application/x-pkcs7-signature"
CRLF = b"\r\n"

_HASHES = {
    "sha1": hashes.SHA1,
    "sha256": hashes.SHA256,
    "sha384": hashes.SHA384,
    "sha512": hashes.SHA512,
}
Days = tuple[int, int]
"""Validity as days relative to now: ``(-30, -1)`` is "from a month ago until yesterday"."""


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(microsecond=0)


def days_from_now(days: float) -> dt.datetime:
    return _now() + dt.timedelta(days=days)


def iso(moment: dt.datetime) -> str:
    """The ``verify-time`` setting's format."""
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


# -- PKI -------------------------------------------------------------------------------------


def make_ca(
    cn: str,
    parent: pki.Identity | None = None,
    *,
    key_type: pki.KeyType = "rsa",
    valid: Days = (-365, 3650),
    ca: bool = True,
    eku: Sequence[x509.ObjectIdentifier] | None = None,
) -> pki.Identity:
    """A CA (root when ``parent`` is None) with chosen validity, CA flag and EKU.

    :func:`tests.pki.make_root` fixes the validity to "from yesterday", which would make every
    intermediate not yet valid at a ``verify-time`` in the past; this one does not.
    """
    key = pki.new_key(key_type)
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "smime-collector generated tests"),
            x509.NameAttribute(NameOID.COMMON_NAME, cn),
        ]
    )
    usage = pki.usage_extension(key_cert_sign=True, crl_sign=True)
    extensions: list[tuple[x509.ExtensionType, bool]] = [
        (x509.BasicConstraints(ca=ca, path_length=None), True),
        (usage, True),
    ]
    if eku:
        extensions.append((x509.ExtendedKeyUsage(list(eku)), False))
    return pki.issue(
        subject,
        key,
        parent,
        extensions,
        not_before=days_from_now(valid[0]),
        not_after=days_from_now(valid[1]),
    )


def make_leaf(
    issuer: pki.Identity, email: str = ALICE, *, valid: Days = (-30, 365), **options
) -> pki.Identity:
    """:func:`tests.pki.make_leaf` with the validity given as :data:`Days`."""
    return pki.make_leaf(
        issuer,
        email,
        not_before=days_from_now(valid[0]),
        not_after=days_from_now(valid[1]),
        **options,
    )


SIGN_ONLY = {"digital_signature": True}
ENCRYPT_ONLY = {"key_encipherment": True}


class World:
    """Every identity the generated cases use, each made on first use.

    ``root`` is the only trust anchor unless a case says otherwise; ``other_root`` is never
    trusted. Names say what is special about a certificate; all are for :data:`ALICE` unless
    their name says otherwise.
    """

    @cached_property
    def root(self) -> pki.Identity:
        return make_ca("Generated Root CA")

    @cached_property
    def inter(self) -> pki.Identity:
        return make_ca("Generated Intermediate CA", self.root)

    @cached_property
    def sub_inter(self) -> pki.Identity:
        return make_ca("Generated Sub CA", self.inter)

    @cached_property
    def ec_inter(self) -> pki.Identity:
        return make_ca("Generated EC Intermediate CA", self.root, key_type="ec")

    @cached_property
    def other_root(self) -> pki.Identity:
        return make_ca("Untrusted Root CA")

    @cached_property
    def other_inter(self) -> pki.Identity:
        return make_ca("Untrusted Intermediate CA", self.other_root)

    @cached_property
    def expired_inter(self) -> pki.Identity:
        return make_ca("Expired Intermediate CA", self.root, valid=(-400, -1))

    @cached_property
    def future_inter(self) -> pki.Identity:
        return make_ca("Future Intermediate CA", self.root, valid=(1, 400))

    @cached_property
    def not_ca_inter(self) -> pki.Identity:
        return make_ca("Not A CA", self.root, ca=False)

    @cached_property
    def server_inter(self) -> pki.Identity:
        return make_ca("TLS-only Intermediate CA", self.root, eku=[ExtendedKeyUsageOID.SERVER_AUTH])

    @cached_property
    def expired_root(self) -> pki.Identity:
        return make_ca("Expired Root CA", valid=(-400, -1))

    # -- end entities ------------------------------------------------------------------------

    @cached_property
    def alice(self) -> pki.Identity:
        return make_leaf(self.inter)

    @cached_property
    def alice_twin(self) -> pki.Identity:
        """Another valid certificate for Alice from the same CA: a decoy in the bag."""
        return make_leaf(self.inter)

    @cached_property
    def alice_same_serial(self) -> pki.Identity:
        """Valid for Alice, same serial number as ``alice`` but another (trusted) issuer."""
        return make_leaf(self.sub_inter, serial=self.alice.cert.serial_number)

    @cached_property
    def bob(self) -> pki.Identity:
        return make_leaf(self.inter, BOB)

    @cached_property
    def bob_future(self) -> pki.Identity:
        return make_leaf(self.inter, BOB, valid=(1, 30))

    @cached_property
    def carol(self) -> pki.Identity:
        return make_leaf(self.inter, CAROL)

    @cached_property
    def alice_untrusted(self) -> pki.Identity:
        return make_leaf(self.other_inter)

    @cached_property
    def alice_deep(self) -> pki.Identity:
        return make_leaf(self.sub_inter)

    @cached_property
    def alice_p256(self) -> pki.Identity:
        return make_leaf(self.inter, key_type="ec", ec_curve="P-256")

    @cached_property
    def alice_p384(self) -> pki.Identity:
        return make_leaf(self.inter, key_type="ec", ec_curve="P-384")

    @cached_property
    def alice_p521(self) -> pki.Identity:
        return make_leaf(self.inter, key_type="ec", ec_curve="P-521")

    @cached_property
    def alice_ec_chain(self) -> pki.Identity:
        return make_leaf(self.ec_inter, key_type="ec")

    @cached_property
    def alice_ed25519(self) -> pki.Identity:
        return make_leaf(self.inter, key_type="ed25519")

    @cached_property
    def alice_rsa1024(self) -> pki.Identity:
        return make_leaf(self.inter, rsa_bits=1024)

    @cached_property
    def alice_expired(self) -> pki.Identity:
        return make_leaf(self.inter, valid=(-30, -1))

    @cached_property
    def alice_future(self) -> pki.Identity:
        return make_leaf(self.inter, valid=(1, 30))

    @cached_property
    def alice_server_eku(self) -> pki.Identity:
        return make_leaf(self.inter, eku=[ExtendedKeyUsageOID.SERVER_AUTH])

    @cached_property
    def alice_any_eku(self) -> pki.Identity:
        return make_leaf(self.inter, eku=[ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE])

    @cached_property
    def alice_no_eku(self) -> pki.Identity:
        return make_leaf(self.inter, eku=pki.ABSENT)

    @cached_property
    def alice_no_key_usage(self) -> pki.Identity:
        return make_leaf(self.inter, key_usage=pki.ABSENT)

    @cached_property
    def alice_subject_only(self) -> pki.Identity:
        """No SAN; the address only in the subject's emailAddress."""
        return make_leaf(self.inter, san=False, subject_email=True)

    @cached_property
    def alice_in_subject_bob_in_san(self) -> pki.Identity:
        """SAN says bob, subject emailAddress says alice: the SAN decides (RFC 8550 §3)."""
        return _san_vs_subject(self.inter, san=BOB, subject=ALICE)

    @cached_property
    def alice_mixed_case(self) -> pki.Identity:
        return make_leaf(self.inter, "Alice@Example.COM")

    @cached_property
    def alice_rsa_sign_only(self) -> pki.Identity:
        return make_leaf(self.inter, key_usage=SIGN_ONLY)

    @cached_property
    def alice_rsa_encrypt_only(self) -> pki.Identity:
        return make_leaf(self.inter, key_usage=ENCRYPT_ONLY)

    @cached_property
    def alice_rsa_encrypt_only_expired(self) -> pki.Identity:
        return make_leaf(self.inter, key_usage=ENCRYPT_ONLY, valid=(-30, -1))

    @cached_property
    def alice_rsa_sign_only_twin(self) -> pki.Identity:
        return make_leaf(self.inter, key_usage=SIGN_ONLY)

    @cached_property
    def bob_rsa_encrypt_only(self) -> pki.Identity:
        return make_leaf(self.inter, BOB, key_usage=ENCRYPT_ONLY)

    @cached_property
    def alice_ec_sign_only(self) -> pki.Identity:
        return make_leaf(self.inter, key_type="ec", key_usage=SIGN_ONLY)

    @cached_property
    def alice_under_expired_inter(self) -> pki.Identity:
        return make_leaf(self.expired_inter)

    @cached_property
    def alice_under_future_inter(self) -> pki.Identity:
        return make_leaf(self.future_inter)

    @cached_property
    def alice_under_not_ca(self) -> pki.Identity:
        return make_leaf(self.not_ca_inter)

    @cached_property
    def alice_under_server_inter(self) -> pki.Identity:
        return make_leaf(self.server_inter)

    @cached_property
    def alice_under_expired_root(self) -> pki.Identity:
        return make_leaf(self.expired_root, valid=(-30, 30))


def _san_vs_subject(issuer: pki.Identity, *, san: str, subject: str) -> pki.Identity:
    """An RSA leaf whose SAN rfc822Name and subject emailAddress name different people."""
    key = pki.new_key("rsa")
    issuer_ski = issuer.cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    cert = (
        x509.CertificateBuilder()
        .subject_name(
            x509.Name(
                [
                    x509.NameAttribute(NameOID.COMMON_NAME, subject),
                    x509.NameAttribute(NameOID.EMAIL_ADDRESS, subject),
                ]
            )
        )
        .issuer_name(issuer.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(days_from_now(-30))
        .not_valid_after(days_from_now(365))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            pki.usage_extension(digital_signature=True, key_encipherment=True), critical=True
        )
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION]), critical=False
        )
        .add_extension(x509.SubjectAlternativeName([x509.RFC822Name(san)]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(issuer_ski),
            critical=False,
        )
        .sign(issuer.key, hashes.SHA256())
    )
    chain = ([] if issuer.is_root else [issuer.cert]) + issuer.chain
    return pki.Identity(cert=cert, key=key, chain=chain)


# -- signing with the openssl tool -----------------------------------------------------------


def _write(directory: Path, name: str, data: bytes) -> Path:
    path = directory / name
    path.write_bytes(data)
    return path


def _unique(certs: Sequence[x509.Certificate]) -> list[x509.Certificate]:
    return list(dict.fromkeys(certs))


def openssl_cms_sign(
    entity: bytes,
    signers: Sequence[pki.Identity],
    *,
    detached: bool = True,
    digest: str = "sha256",
    flags: Sequence[str] = (),
) -> bytes:
    """DER (or BER, with ``-stream``) SignedData from one ``openssl cms -sign -binary`` run.

    Every signer gets a SignerInfo (``-signer``/``-inkey`` repeated) and the signers' chains are
    embedded; ``flags`` are extra options such as ``-noattr`` or ``-stream``.
    """
    with tempfile.TemporaryDirectory(prefix="smime-cases-") as name:
        tmp = Path(name)
        args: list[str | Path] = ["cms", "-sign", "-binary", "-md", digest]
        args += ["-in", _write(tmp, "content", entity), "-outform", "DER", "-out", "out.der"]
        for i, signer in enumerate(signers):
            args += ["-signer", _write(tmp, f"signer{i}.pem", signer.cert_pem())]
            args += ["-inkey", _write(tmp, f"signer{i}.key", signer.key_pem())]
        bag = _unique([c for s in signers for c in s.chain])
        if bag:
            args += ["-certfile", _write(tmp, "certs.pem", pki.pem(*bag))]
        if not detached:
            args.append("-nodetach")
        pki.run_openssl(*args, *flags, cwd=tmp)
        return (tmp / "out.der").read_bytes()


def openssl_native_message(
    entity: bytes,
    signer: pki.Identity,
    *,
    command: Literal["smime", "cms"],
    detached: bool,
    from_addr: str = ALICE,
) -> bytes:
    """A whole message as ``openssl smime|cms -sign -from -to -subject`` writes it.

    Text mode (no ``-binary``): OpenSSL signs the CRLF-canonical form of ``entity`` but writes
    the message with bare LF line ends, and uses its own MIME layout (``x-pkcs7-signature`` for
    ``smime``, quoted ``micalg``, ``----`` boundaries).
    """
    with tempfile.TemporaryDirectory(prefix="smime-cases-") as name:
        tmp = Path(name)
        args: list[str | Path] = [command, "-sign", "-in", _write(tmp, "content", entity)]
        args += ["-signer", _write(tmp, "signer.pem", signer.cert_pem())]
        args += ["-inkey", _write(tmp, "signer.key", signer.key_pem())]
        if signer.chain:
            args += ["-certfile", _write(tmp, "chain.pem", pki.pem(*signer.chain))]
        args += ["-from", from_addr, "-to", pki.DEFAULT_TO, "-subject", "signed by openssl"]
        if not detached:
            args.append("-nodetach")
        return pki.run_openssl(*args, cwd=tmp)


# -- taking SignedData apart and putting it back together ------------------------------------


def _tlv(tag: int, content: bytes) -> bytes:
    """One DER element with a single-byte tag."""
    size = len(content)
    if size < 0x80:
        return bytes([tag, size]) + content
    octets = size.to_bytes((size.bit_length() + 7) // 8, "big")
    return bytes([tag, 0x80 | len(octets)]) + octets + content


def _content_info(signed_data: bytes) -> bytes:
    oid = asn1.ObjectIdentifier("1.2.840.113549.1.7.2").dump()
    return _tlv(0x30, oid + _tlv(0xA0, signed_data))


def _der(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.DER)


def signer_infos(der: bytes) -> list[cms.SignerInfo]:
    """The SignerInfos in the order they are encoded (the order the service reads them)."""
    return list(cms.ContentInfo.load(der)["content"]["signer_infos"])


def bag_of(der: bytes) -> list[x509.Certificate]:
    """The certificates of a SignedData in the order they are encoded."""
    bag = cms.ContentInfo.load(der)["content"]["certificates"]
    return [x509.load_der_x509_certificate(c.chosen.dump()) for c in bag]


def signer_serial(info: cms.SignerInfo) -> int:
    return info["sid"].chosen["serial_number"].native


def rebuild(
    der: bytes,
    *,
    certs: Sequence[x509.Certificate] | None = None,
    signers: Sequence[bytes] | None = None,
) -> bytes:
    """``der`` (DER SignedData) with its certificates and/or SignerInfos replaced, in order.

    OpenSSL sorts both SET OFs by encoding, so a case that needs "the decoy first" or "the bad
    signer first" rebuilds the structure; no signature covers these fields.
    """
    signed = cms.ContentInfo.load(der)["content"]
    fields = [
        signed[name].dump() for name in ("version", "digest_algorithms", "encap_content_info")
    ]
    bag = bag_of(der) if certs is None else certs
    if bag:
        fields.append(_tlv(0xA0, b"".join(_der(c) for c in bag)))
    if signed["crls"].native is not None:
        fields.append(signed["crls"].dump())
    infos = [i.dump() for i in signed["signer_infos"]] if signers is None else signers
    fields.append(_tlv(0x31, b"".join(infos)))
    return _content_info(_tlv(0x30, b"".join(fields)))


def with_bad_signature(info: cms.SignerInfo) -> bytes:
    """A SignerInfo whose signature value has one bit flipped."""
    copy = cms.SignerInfo.load(info.dump())
    value = bytearray(copy["signature"].native)
    value[-1] ^= 0x01
    copy["signature"] = bytes(value)
    return copy.dump()


# -- SignedData assembled by hand ------------------------------------------------------------


def issuer_and_serial(cert: x509.Certificate) -> cms.IssuerAndSerialNumber:
    return cms.IssuerAndSerialNumber(
        {
            "issuer": asn1_x509.Name.load(cert.issuer.public_bytes()),
            "serial_number": cert.serial_number,
        }
    )


def attribute(oid: str, *values: bytes) -> bytes:
    """A DER Attribute ``SEQUENCE { type, SET OF value }`` from encoded values."""
    return _tlv(0x30, asn1.ObjectIdentifier(oid).dump() + _tlv(0x31, b"".join(values)))


def _subject_key_id(cert: x509.Certificate) -> bytes:
    return cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest


PreferenceForm = Literal["issuer-serial", "recipient-key-id", "subject-key-id", "microsoft"]


def key_preference(cert: x509.Certificate, form: PreferenceForm = "issuer-serial") -> bytes:
    """The signed attribute saying "encrypt to ``cert``".

    RFC 8551 §2.5.3 SMIMEEncryptionKeyPreference is a CHOICE of issuerAndSerialNumber [0],
    receipentKeyId [1] and subjectAltKeyIdentifier [2]; Microsoft's attribute
    (1.3.6.1.4.1.311.16.4) is a plain IssuerAndSerialNumber.
    """
    if form == "microsoft":
        return attribute(MS_KEY_PREFERENCE, issuer_and_serial(cert).dump())
    if form == "issuer-serial":
        value = b"\xa0" + issuer_and_serial(cert).dump()[1:]  # [0] IMPLICIT SEQUENCE
    elif form == "recipient-key-id":
        value = _tlv(0xA1, asn1.OctetString(_subject_key_id(cert)).dump())
    else:
        value = _tlv(0x82, _subject_key_id(cert))  # [2] IMPLICIT OCTET STRING
    return attribute(SMIME_KEY_PREFERENCE, value)


def _attr(name: str, value: asn1.Asn1Value) -> bytes:
    return cms.CMSAttribute({"type": name, "values": [value]}).dump()


def build_signed_data(
    content: bytes,
    signer: pki.Identity,
    *,
    certs: Sequence[x509.Certificate] | None = None,
    detached: bool = True,
    digest: str | None = None,
    signature_hash: str | None = None,
    signing_time: dt.datetime | None = None,
    content_type: str = "data",
    extra_attrs: Sequence[bytes] = (),
    sorted_attrs: bool = True,
) -> bytes:
    """DER SignedData over ``content`` signed by ``signer`` with ``cryptography``.

    Signed attributes: contentType (``content_type``), signingTime (``signing_time``, default
    now), messageDigest (``digest``) and ``extra_attrs``. ``signature_hash`` makes the signature
    algorithm use another hash than ``digest`` (``sha1`` with RSA: sha1WithRSAEncryption).
    ``sorted_attrs=False`` encodes and signs the attributes in reverse DER order, as a signer
    that does not sort its SET OF does. ``certs`` defaults to the signer and its chain.
    ``digest`` defaults to SHA-512 for Ed25519 (RFC 8419) and SHA-256 otherwise.
    """
    if digest is None:
        digest = "sha512" if isinstance(signer.key, ed25519.Ed25519PrivateKey) else "sha256"
    attrs = [
        _attr("content_type", cms.ContentType(content_type)),
        _attr("signing_time", cms.Time(name="utc_time", value=signing_time or _now())),
        _attr("message_digest", asn1.OctetString(hashlib.new(digest, content).digest())),
        *extra_attrs,
    ]
    ordered = sorted(attrs, reverse=not sorted_attrs)
    signed_attrs = b"".join(ordered)
    to_sign = _tlv(0x31, signed_attrs)
    hash_name = signature_hash or digest
    key = signer.key
    if isinstance(key, rsa.RSAPrivateKey):
        signature = key.sign(to_sign, padding.PKCS1v15(), _HASHES[hash_name]())
        algorithm = f"{hash_name}_rsa"
    elif isinstance(key, ec.EllipticCurvePrivateKey):
        signature = key.sign(to_sign, ec.ECDSA(_HASHES[hash_name]()))
        algorithm = f"{hash_name}_ecdsa"
    elif isinstance(key, ed25519.Ed25519PrivateKey):
        signature = key.sign(to_sign)
        algorithm = "ed25519"
    else:
        raise TypeError(f"unsupported key {type(key).__name__}")
    digest_algorithm = cms.DigestAlgorithm({"algorithm": digest}).dump()
    signer_info = _tlv(
        0x30,
        asn1.Integer(1).dump()
        + issuer_and_serial(signer.cert).dump()
        + digest_algorithm
        + _tlv(0xA0, signed_attrs)
        + cms.SignedDigestAlgorithm({"algorithm": algorithm}).dump()
        + asn1.OctetString(signature).dump(),
    )
    data_oid = asn1.ObjectIdentifier("1.2.840.113549.1.7.1").dump()
    econtent = b"" if detached else _tlv(0xA0, asn1.OctetString(content).dump())
    bag = [signer.cert, *signer.chain] if certs is None else certs
    signed_data = (
        asn1.Integer(1).dump()
        + _tlv(0x31, digest_algorithm)
        + _tlv(0x30, data_oid + econtent)
        + (_tlv(0xA0, b"".join(_der(c) for c in bag)) if bag else b"")
        + _tlv(0x31, signer_info)
    )
    return _content_info(_tlv(0x30, signed_data))


# -- MIME ------------------------------------------------------------------------------------

BOUNDARY = "=_generated-signed-7f3a"


def _b64(data: bytes) -> bytes:
    text = base64.b64encode(data)
    return CRLF.join(text[i : i + 76] for i in range(0, len(text), 76)) + CRLF


def _lines(*lines: str) -> bytes:
    return b"".join(line.encode() + CRLF for line in lines)


def multipart_signed(
    entity: bytes,
    der: bytes,
    *,
    protocol: str = SIGNATURE_PROTOCOL,
    micalg: str = "sha-256",
    fold: bool = False,
) -> bytes:
    """``multipart/signed`` whose first part is exactly ``entity`` and second the signature.

    The signature part's type follows ``protocol``. ``fold=True`` folds both Content-Type
    headers over several lines (tab and space continuations).
    """
    params = [f'protocol="{protocol}"', f"micalg={micalg}", f'boundary="{BOUNDARY}"']
    sep = ";\r\n\t" if fold else "; "
    signature_type = protocol + (";\r\n name=smime.p7s" if fold else "; name=smime.p7s")
    delimiter = f"--{BOUNDARY}".encode()
    return (
        _lines("Content-Type: multipart/signed" + sep + sep.join(params))
        + CRLF
        + b"This is a cryptographically signed message in MIME format." + CRLF + CRLF
        + delimiter + CRLF + entity + CRLF + delimiter + CRLF
        + _lines(
            f"Content-Type: {signature_type}",
            "Content-Transfer-Encoding: base64",
            'Content-Disposition: attachment; filename="smime.p7s"',
            "Content-Description: S/MIME Cryptographic Signature",
        )
        + CRLF + _b64(der) + CRLF + delimiter + b"--" + CRLF
    )  # fmt: skip


def pkcs7_mime(
    der: bytes,
    *,
    content_type: str = "application/pkcs7-mime",
    smime_type: str | None = "signed-data",
    name: str = "smime.p7m",
) -> bytes:
    """An opaque entity: ``der`` in base64 under ``content_type`` (``smime_type`` optional)."""
    ctype = content_type + (f"; smime-type={smime_type}" if smime_type else "")
    return (
        _lines(
            f'Content-Type: {ctype}; name="{name}"',
            "Content-Transfer-Encoding: base64",
            f'Content-Disposition: attachment; filename="{name}"',
        )
        + CRLF
        + _b64(der)
    )


def message(entity: bytes, from_addr: str = ALICE, **options) -> bytes:
    """A whole message (To, From, Subject, Date, MIME-Version) around ``entity``."""
    return pki.message(entity, from_addr=from_addr, **options)


def body(text: str = TEXT, **options) -> bytes:
    """The text/plain entity that gets signed (see :func:`tests.pki.mime_body`)."""
    return pki.mime_body(text, **options)


def detached(signer: pki.Identity, **options: Unpack[pki.SignOptions]) -> bytes:
    """Whole message from ``signer``'s address, detached signature made by ``tests.pki``."""
    return message(pki.sign_detached(body(), signer, **options), signer.email or ALICE)


def opaque(signer: pki.Identity, **options: Unpack[pki.SignOptions]) -> bytes:
    """Whole message from ``signer``'s address, opaque signed-data made by ``tests.pki``."""
    return message(pki.sign_opaque(body(), signer, **options), signer.email or ALICE)


def forwarded_as_attachment(signed: bytes, from_addr: str = ALICE) -> bytes:
    """A new message whose second part is ``signed`` as a message/rfc822 attachment."""
    return message(
        _lines('Content-Type: multipart/mixed; boundary="=_forward"')
        + CRLF
        + _lines("--=_forward", "Content-Type: text/plain; charset=utf-8", "")
        + b"My signed message is attached." + CRLF
        + _lines("--=_forward", "Content-Type: message/rfc822")
        + _lines('Content-Disposition: attachment; filename="signed.eml"', "")
        + signed + CRLF
        + _lines("--=_forward--"),
        from_addr,
    )  # fmt: skip


def with_footer(signed_entity: bytes, from_addr: str = ALICE) -> bytes:
    """A multipart/mixed message whose first part is the signed entity, then a footer part."""
    return message(
        _lines('Content-Type: multipart/mixed; boundary="=_footer"', "", "--=_footer")
        + signed_entity + CRLF
        + _lines("--=_footer", "Content-Type: text/plain", "", "-- list footer", "--=_footer--"),
        from_addr,
    )  # fmt: skip


def to_lf(raw: bytes) -> bytes:
    """The whole message with bare LF line ends, as a Unix mbox or a careless relay has it."""
    return raw.replace(CRLF, b"\n")


def replace_once(raw: bytes, old: bytes, new: bytes) -> bytes:
    assert raw.count(old) >= 1, f"{old!r} not in the message"
    return raw.replace(old, new, 1)


def tamper_opaque(raw: bytes, old: bytes, new: bytes) -> bytes:
    """Edit the content encapsulated in an opaque message's base64 body (same length)."""
    head, _, encoded = raw.partition(CRLF + CRLF)
    der = base64.b64decode(encoded)
    assert len(old) == len(new) and old in der
    return head + CRLF + CRLF + _b64(der.replace(old, new, 1))


def alternative_body() -> bytes:
    """A multipart/alternative entity (text and HTML): a boundary inside the signed part."""
    return (
        _lines('Content-Type: multipart/alternative; boundary="=_alt"', "", "--=_alt")
        + body() + CRLF
        + _lines("--=_alt", "Content-Type: text/html; charset=utf-8", "")
        + b"<p>Hello there, this is a signed message.</p>" + CRLF
        + _lines("--=_alt--")
    )  # fmt: skip
