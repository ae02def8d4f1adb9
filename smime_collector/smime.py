"""Find the outermost S/MIME signature of a message and verify it (RFC 5652, RFC 8551).

Only the outermost layer binds to the sender: a signed message forwarded inside another one, or
a signature under an encryption layer, proves nothing about the person in From:. Verification
follows RFC 5652 §5.4: the messageDigest attribute must match the content exactly as received,
contentType must match, and the signature must verify over the DER ``SET OF`` of the signed
attributes. The certificate checked afterwards is the one the SignerInfo names, never a guess.
"""

from __future__ import annotations

import functools
import hashlib
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field

from asn1crypto import cms
from asn1crypto import core as asn1
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.utils import CryptographyDeprecationWarning

from smime_collector import rawcms
from smime_collector.boundedcache import cached_when_short
from smime_collector.message import Entity, MalformedMessage
from smime_collector.trust import CORRUPT_CERTIFICATE
from smime_collector.verdict import Check

MAX_CERTIFICATES = 50
#: Parsed certificates kept per process, by their exact bytes (see :func:`_load_certificate`).
CERTIFICATE_CACHE_SIZE = 512
#: Longest signature AlgorithmIdentifier whose hash name is kept (RSA-PSS with its parameters
#: is about 70 bytes); a longer one is read every time, so the sender cannot fill memory.
MAX_CACHED_ALGORITHM_BYTES = 128
MAX_CRLS = 50
MAX_SIGNATURE_BYTES = 1 << 20
MAX_SIGNERS = 10
#: Signed attributes per SignerInfo, and their size: 90,000 attributes under the 1 MiB
#: signature bound took 7.7 s to parse. Mail clients sign five to ten.
MAX_SIGNED_ATTRIBUTES = 64
MAX_SIGNED_ATTRIBUTES_BYTES = 16 * 1024

SIGNATURE_TYPES = {"application/pkcs7-signature", "application/x-pkcs7-signature"}
MIME_TYPES = {"application/pkcs7-mime", "application/x-pkcs7-mime"}
NOT_SIGNED_TYPES = {
    "enveloped-data",
    "authenveloped-data",
    "certs-only",
    "compressed-data",
}
SMIME_ENCRYPTION_KEY_PREFERENCE = "1.2.840.113549.1.9.16.2.11"
MS_ENCRYPTION_KEY_PREFERENCE = "1.3.6.1.4.1.311.16.4"
CONTENT_TYPE = "1.2.840.113549.1.9.3"
MESSAGE_DIGEST = "1.2.840.113549.1.9.4"
#: The signed attributes the service reads; others are signed over but never parsed.
READ_ATTRIBUTES = {
    CONTENT_TYPE,
    MESSAGE_DIGEST,
    SMIME_ENCRYPTION_KEY_PREFERENCE,
    MS_ENCRYPTION_KEY_PREFERENCE,
}

_HASHES: dict[str, type[hashes.HashAlgorithm]] = {
    "sha1": hashes.SHA1,
    "sha224": hashes.SHA224,
    "sha256": hashes.SHA256,
    "sha384": hashes.SHA384,
    "sha512": hashes.SHA512,
}
WEAK_DIGESTS = {"sha1"}

# RFC 5280 asks CAs for positive serial numbers and asks relying parties to cope with
# negative ones (NIST PKITS 4.4.14/15): cryptography warns on every read of such a serial.
warnings.filterwarnings(
    "ignore", "Parsed a serial number which wasn't positive", CryptographyDeprecationWarning
)


class _RecipientKeyIdentifier(asn1.Sequence):
    _fields = [
        ("subject_key_identifier", asn1.OctetString),
        ("date", asn1.GeneralizedTime, {"optional": True}),
        ("other", asn1.Any, {"optional": True}),
    ]


class _EncryptionKeyPreference(asn1.Choice):
    """RFC 8551 SMIMEEncryptionKeyPreference. asn1crypto's own spec types subjectAltKeyIdentifier
    as a PublicKeyInfo, so a correct [2] OCTET STRING fails to parse with it."""

    _alternatives = [
        ("issuer_and_serial_number", cms.IssuerAndSerialNumber, {"implicit": 0}),
        ("recipient_key_id", _RecipientKeyIdentifier, {"implicit": 1}),
        ("subject_alt_key_identifier", asn1.OctetString, {"implicit": 2}),
    ]


@dataclass
class SignedPart:
    """The outermost signature: the CMS bytes and, for detached signing, the signed content."""

    kind: str  # "detached" or "opaque"
    cms_der: bytes
    content: bytes | None
    filename: str | None


@dataclass
class Signer:
    """A SignerInfo whose signature verified, with the certificate its ``sid`` names."""

    cert: x509.Certificate
    digest: str
    signature_algorithm: str
    encryption_preference: x509.Certificate | None = None


@dataclass
class SignedData:
    """Everything the certificate policy needs from the CMS structure. ``der_of`` maps each
    certificate to the exact bytes it arrived in; ``crls`` are the CRLs of the ``crls`` field,
    exact bytes too."""

    certificates: list[x509.Certificate]
    der_of: dict[x509.Certificate, bytes] = field(default_factory=dict)
    crls: list[bytes] = field(default_factory=list)
    signers: list[Signer] = field(default_factory=list)
    failures: list[Check] = field(default_factory=list)


def find_signature(top: Entity) -> SignedPart | Check:
    """Locate the outermost signature layer; anything else is ``not-signed``."""
    ctype = top.content_type
    try:
        if ctype == "multipart/signed":
            return _detached(top)
        if ctype in MIME_TYPES or _is_p7m_attachment(top):
            return _opaque(top)
    except MalformedMessage as exc:
        return Check.fail("malformed", str(exc))
    return Check.fail("not-signed", f"the message is {ctype}, not an S/MIME signed message")


def _is_p7m_attachment(entity: Entity) -> bool:
    name = (entity.filename or "").lower()
    return entity.content_type == "application/octet-stream" and name.endswith(".p7m")


def _detached(top: Entity) -> SignedPart | Check:
    protocol = (top.param("protocol") or "").lower()
    if protocol not in SIGNATURE_TYPES:
        return Check.fail("not-signed", f"multipart/signed with protocol {protocol!r}")
    parts = top.parts()
    if len(parts) != 2:
        return Check.fail("malformed", f"multipart/signed has {len(parts)} parts, not 2")
    content, signature = parts
    if signature.content_type not in SIGNATURE_TYPES:
        return Check.fail(
            "malformed", f"second part of multipart/signed is {signature.content_type}"
        )
    return SignedPart("detached", _bounded(signature.decoded()), content.raw, signature.filename)


def _opaque(top: Entity) -> SignedPart | Check:
    smime_type = (top.param("smime-type") or "").lower()
    if smime_type in NOT_SIGNED_TYPES:
        return Check.fail("not-signed", f"{top.content_type} with smime-type={smime_type}")
    der = _bounded(top.decoded())
    if not smime_type:
        try:
            kind = cms.ContentInfo.load(der)["content_type"].native
        except (ValueError, TypeError) as exc:
            return Check.fail("malformed", f"{top.content_type} body is not CMS: {exc}")
        if kind != "signed_data":
            return Check.fail("not-signed", f"{top.content_type} holds CMS {kind}")
    return SignedPart("opaque", der, None, top.filename)


def _bounded(data: bytes) -> bytes:
    if len(data) > MAX_SIGNATURE_BYTES:
        raise MalformedMessage(
            f"signature of {len(data)} bytes exceeds the bound of {MAX_SIGNATURE_BYTES}"
        )
    return data


def verify_signed_data(part: SignedPart) -> SignedData | Check:
    """Parse the CMS SignedData and verify every SignerInfo over the signed content.

    A detached signature of the plain shape is read by :func:`_verify_plain`; it answers only
    when every signer verified, and anything else (any failure, any unusual shape) is judged
    again from the start by :func:`verify_with_asn1crypto`, so every rejection and its detail
    come from that one reading.
    """
    if part.kind == "detached":
        verified = _verify_plain(part)
        if verified is not None:
            return verified
    return verify_with_asn1crypto(part)


def verify_with_asn1crypto(part: SignedPart) -> SignedData | Check:
    """:func:`verify_signed_data` with the structure read by asn1crypto: any shape and
    encoding CMS allows, and the reason for every failure."""
    try:
        info = cms.ContentInfo.load(part.cms_der)
        kind = info["content_type"].native
        if kind != "signed_data":
            return Check.fail("not-signed", f"the CMS content is {kind}, not signed data")
        signed = info["content"]
        found = _members(part.cms_der)
        if isinstance(found, Check):
            return found
        loaded = _certificates(found.certificates)
        if isinstance(loaded, Check):
            return loaded
        certificates, exact = loaded
        signer_infos = list(signed["signer_infos"])
        if not signer_infos:  # before the content: certs-only has none, signed or not
            return Check.fail("not-signed", "signed data with no signer (certs-only)")
        encap = signed["encap_content_info"]
        if part.kind == "detached":
            content = part.content or b""
        else:
            econtent = encap["content"]
            if econtent.native is None:
                return Check.fail("malformed", "opaque signed data without encapsulated content")
            content = _octets(econtent)
        content_type = encap["content_type"].dotted
    except (ValueError, TypeError, KeyError) as exc:
        return Check.fail("bad-signature", f"CMS structure cannot be parsed: {exc}")
    if len(signer_infos) > MAX_SIGNERS:
        return Check.fail("malformed", f"more signers than the bound of {MAX_SIGNERS}")
    result = SignedData(certificates, exact, found.crls)
    for signer_info in signer_infos:
        outcome = _verify_signer(signer_info, content, content_type, certificates)
        if isinstance(outcome, Signer):
            result.signers.append(outcome)
        else:
            result.failures.append(outcome)
    return result


def _verify_plain(part: SignedPart) -> SignedData | None:
    """The :class:`SignedData` of a plain detached signature whose every signer verifies,
    read with :func:`rawcms.plain_signed_data` and asn1crypto only for the few small values
    the checks read; None whenever :func:`verify_with_asn1crypto` is to judge instead.

    The steps and their order are those of :func:`verify_with_asn1crypto` and
    :func:`_verify_signer_info`, on the same values: each element handed to asn1crypto is the
    one it would have parsed in place, each value read here is one asn1crypto reads from the
    same bytes, and the signed attributes are checked over the bytes its ``untag().dump()``
    gives for a definite-length SET.
    """
    try:
        plain = rawcms.plain_signed_data(part.cms_der)
    except rawcms.RawCMSError:
        return None
    if plain is None or not 0 < len(plain.signers) <= MAX_SIGNERS:
        return None
    found = plain.members
    if len(found.certificates) > MAX_CERTIFICATES or len(found.crls) > MAX_CRLS:
        return None
    loaded = _certificates(found.certificates)
    if isinstance(loaded, Check):
        return None
    certificates, exact = loaded
    content = part.content or b""
    result = SignedData(certificates, exact, found.crls)
    try:
        bag = _Bag(certificates, [_issuer_der(der) for der in found.certificates])
        content_type = _dotted(plain.content_type)
        for plain_signer in plain.signers:
            signer = _verify_plain_signer(plain_signer, content, content_type, bag)
            if signer is None:
                return None
            result.signers.append(signer)
    except (ValueError, TypeError, KeyError):
        return None
    return result


@dataclass
class _Bag:
    """The message's certificates with the encoding of each one's issuer name, which
    cryptography makes anew on every ``issuer.public_bytes()`` (kept per certificate)."""

    certs: list[x509.Certificate]
    issuers: list[bytes]


def _verify_plain_signer(
    plain: rawcms.PlainSigner, content: bytes, content_type: str, bag: _Bag
) -> Signer | None:
    digest_name = _digest_name(plain.digest_algorithm)
    hash_cls = _HASHES.get(digest_name)
    if hash_cls is None:
        return None
    algorithm = cms.SignedDigestAlgorithm.load(plain.signature_algorithm)
    signature_hash = _signature_hash(algorithm, digest_name)
    if signature_hash not in _HASHES:
        return None
    if plain.sid[0] == 0x80:  # [0] subjectKeyIdentifier, primitive
        cert = _by_key_id(rawcms.contents(plain.sid), bag.certs)
    else:
        cert = _plain_by_issuer_serial(plain.sid, bag)
    if cert is None:
        return None
    values: dict[str, tuple[bytes, list[bytes]]] = {}
    if plain.signed_attrs is None:
        signed_bytes = content
    else:
        if len(plain.signed_attrs) > MAX_SIGNED_ATTRIBUTES_BYTES:
            return None
        if len(plain.attributes) > MAX_SIGNED_ATTRIBUTES:
            return None
        for oid, value_set in plain.attributes:
            if (name := _dotted(oid)) in READ_ATTRIBUTES:
                values[name] = rawcms.set_members(value_set)
        if not _plain_attributes_match(values, content, content_type, hash_cls):
            return None
        signed_bytes = _set_of(plain.signed_attrs)
    check = _verify_signature(cert, algorithm, plain.signature, signed_bytes, hash_cls)
    if not check.ok:
        return None
    standard = values.get(SMIME_ENCRYPTION_KEY_PREFERENCE)
    microsoft = values.get(MS_ENCRYPTION_KEY_PREFERENCE)
    preference = _preference(
        None if standard is None else standard[0],
        None if microsoft is None else microsoft[0],
        bag.certs,
        lambda element: _plain_by_issuer_serial(element, bag),
    )
    weakest = signature_hash if signature_hash in WEAK_DIGESTS else digest_name
    return Signer(cert, weakest, check.detail, preference)


def _plain_attributes_match(
    values: dict[str, tuple[bytes, list[bytes]]],
    content: bytes,
    content_type: str,
    hash_cls: type[hashes.HashAlgorithm],
) -> bool:
    """What :func:`_check_attributes` passes, read from the members' bytes: one contentType
    OID equal to the content's type, one primitive messageDigest OCTET STRING equal to the
    content's digest. A member of another type is left to asn1crypto (False)."""
    declared = values.get(CONTENT_TYPE)
    digest = values.get(MESSAGE_DIGEST)
    if declared is None or digest is None or len(declared[1]) != 1 or len(digest[1]) != 1:
        return False
    oid, octets = declared[1][0], digest[1][0]
    if oid[0] != 0x06 or octets[0] != 0x04 or _dotted(oid) != content_type:
        return False
    return rawcms.contents(octets) == hashlib.new(hash_cls.name, content).digest()


def _plain_by_issuer_serial(element: bytes, bag: _Bag) -> x509.Certificate | None:
    """:func:`_by_issuer_serial` on the exact bytes of an IssuerAndSerialNumber; an unusual
    encoding of one is read by asn1crypto as there."""
    found = rawcms.issuer_and_serial(element)
    if found is None:
        return _by_issuer_serial(cms.IssuerAndSerialNumber.load(element), bag.certs)
    encoded, serial = found
    candidates = [i for i, cert in enumerate(bag.certs) if cert.serial_number == serial]
    for i in candidates:
        if bag.issuers[i] == encoded:
            return bag.certs[i]
    if not candidates:
        return None
    issuer = asn1_x509.Name.load(encoded)
    for i in candidates:
        if asn1_x509.Name.load(bag.issuers[i]) == issuer:
            return bag.certs[i]
    return None


@functools.lru_cache(maxsize=CERTIFICATE_CACHE_SIZE)
def _issuer_der(der: bytes) -> bytes:
    """``issuer.public_bytes()`` of the certificate ``der`` loads to."""
    return _load_certificate(der).issuer.public_bytes()


def _set_of(contents: bytes) -> bytes:
    """A DER SET OF around ``contents``: what asn1crypto's ``untag().dump()`` gives for the
    definite-length [0] signedAttrs with these contents (the header made anew, the length in
    the fewest octets)."""
    length = len(contents)
    if length <= 127:
        return b"\x31" + bytes([length]) + contents
    octets = length.to_bytes((length.bit_length() + 7) // 8, "big")
    return b"\x31" + bytes([0x80 | len(octets)]) + octets + contents


@cached_when_short(maxsize=256, max_len=MAX_CACHED_ALGORITHM_BYTES)
def _dotted(oid: bytes) -> str:
    """The dotted form of an OID element, as asn1crypto reads it."""
    return asn1.ObjectIdentifier.load(oid).dotted


@cached_when_short(maxsize=64, max_len=MAX_CACHED_ALGORITHM_BYTES)
def _digest_name(algorithm: bytes) -> str:
    """A DigestAlgorithm element's name, as asn1crypto reads it."""
    return cms.DigestAlgorithm.load(algorithm)["algorithm"].native


def _octets(value: asn1.Asn1Value) -> bytes:
    parsed = value.native
    return parsed if isinstance(parsed, bytes) else value.contents


def _members(cms_der: bytes) -> rawcms.Members | Check:
    """The certificates and CRLs as the exact bytes they arrived in (see :mod:`rawcms`)."""
    try:
        found = rawcms.members(cms_der)
    except rawcms.RawCMSError as exc:
        return Check.fail("bad-signature", f"CMS structure cannot be parsed: {exc}")
    if len(found.certificates) > MAX_CERTIFICATES:
        return Check.fail("malformed", f"more certificates than the bound of {MAX_CERTIFICATES}")
    if len(found.crls) > MAX_CRLS:
        return Check.fail("malformed", f"more CRLs than the bound of {MAX_CRLS}")
    return found


def _certificates(ders: list[bytes]) -> tuple[list[x509.Certificate], dict] | Check:
    certificates = []
    exact: dict[x509.Certificate, bytes] = {}
    for der in ders:
        try:
            cert = _load_certificate(der)
        except CORRUPT_CERTIFICATE as exc:
            if _is_dsa(der):
                return Check.fail("weak-algorithm", "a certificate in the signature has a DSA key")
            return Check.fail("bad-signature", f"a certificate in the signature is corrupt: {exc}")
        certificates.append(cert)
        exact.setdefault(cert, der)
    return certificates, exact


def _is_dsa(der: bytes) -> bool:
    """DSA keys whose parameters are inherited from the issuer cannot be loaded on their own;
    S/MIME dropped DSA anyway, so such a certificate is a weak algorithm, not corruption."""
    try:
        return asn1_x509.Certificate.load(der).public_key.algorithm == "dsa"
    except (ValueError, TypeError, KeyError):
        return False


@functools.lru_cache(maxsize=CERTIFICATE_CACHE_SIZE)
def _load_certificate(der: bytes) -> x509.Certificate:
    """Load a certificate and read every field now: cryptography parses lazily, and a corrupt
    field must fail here, as the message's fault, not later in the policy or the log.

    Kept by its exact bytes (a certificate is immutable, and the same bytes always load the
    same way): the issuers, and a returning sender's own certificate, recur in every message,
    and reading every field costs more than the CMS signature check. A corrupt certificate
    raises, so it is never kept.
    """
    return _read_all(x509.load_der_x509_certificate(der))


def _read_all(cert: x509.Certificate) -> x509.Certificate:
    cert.extensions  # noqa: B018 - parses every extension, raising for a corrupt one
    cert.public_key()
    cert.signature_hash_algorithm  # noqa: B018 - raises for an unknown signature algorithm
    cert.subject  # noqa: B018 - names parse on first use
    cert.issuer  # noqa: B018
    return cert


def _verify_signer(
    info: cms.SignerInfo, content: bytes, content_type: str, bag: list[x509.Certificate]
) -> Signer | Check:
    try:
        return _verify_signer_info(info, content, content_type, bag)
    except (
        ValueError,
        TypeError,
        KeyError,
    ) as exc:  # asn1crypto parses lazily, fails late
        return Check.fail("bad-signature", f"SignerInfo cannot be parsed: {exc}")


def _verify_signer_info(
    info: cms.SignerInfo, content: bytes, content_type: str, bag: list[x509.Certificate]
) -> Signer | Check:
    digest_name = info["digest_algorithm"]["algorithm"].native
    hash_cls = _HASHES.get(digest_name)
    if hash_cls is None:
        return Check.fail("weak-algorithm", f"digest algorithm {digest_name} is not accepted")
    algorithm = info["signature_algorithm"]
    signature_hash = _signature_hash(algorithm, digest_name)
    if signature_hash not in _HASHES:
        return Check.fail("weak-algorithm", f"signature hash {signature_hash} is not accepted")
    cert = find_certificate(info["sid"], bag)
    if cert is None:
        return Check.fail("no-certificate", "the signer's certificate is not in the message")
    attrs = info["signed_attrs"]
    if isinstance(attrs, asn1.Void):
        signed_bytes = content
        values: dict[str, asn1.Asn1Value] = {}
    else:
        if len(attrs.contents) > MAX_SIGNED_ATTRIBUTES_BYTES:  # checked before parsing any
            return Check.fail(
                "malformed",
                f"signed attributes of {len(attrs.contents)} bytes exceed the bound of "
                f"{MAX_SIGNED_ATTRIBUTES_BYTES}",
            )
        if len(attrs) > MAX_SIGNED_ATTRIBUTES:
            return Check.fail(
                "malformed",
                f"{len(attrs)} signed attributes exceed the bound of {MAX_SIGNED_ATTRIBUTES}",
            )
        # Each attribute's SET OF values, parsed only where read: asn1crypto's spec for some
        # attributes is wrong, and an attribute nobody reads must not break the signature.
        values = {
            oid: attr["values"] for attr in attrs if (oid := attr["type"].dotted) in READ_ATTRIBUTES
        }
        check = _check_attributes(values, content, content_type, hash_cls)
        if not check.ok:
            return check
        signed_bytes = attrs.untag().dump()  # as received, re-tagged as a SET OF
    signature = info["signature"].native
    check = _verify_signature(cert, algorithm, signature, signed_bytes, hash_cls)
    if not check.ok and values:
        # RFC 5652 §5.4: the signature covers the DER encoding; re-encode when received as BER.
        canonical = attrs.untag().dump(force=True)
        if canonical != signed_bytes:
            check = _verify_signature(cert, algorithm, signature, canonical, hash_cls)
    if not check.ok:
        return check
    preference = _encryption_preference(values, bag)
    # The weak-digest policy must also see a weak hash named by the signature algorithm
    # (sha1WithRSAEncryption under a SHA-256 digestAlgorithm).
    weakest = signature_hash if signature_hash in WEAK_DIGESTS else digest_name
    return Signer(cert, weakest, check.detail, preference)


def _check_attributes(
    values: dict[str, asn1.Asn1Value],
    content: bytes,
    content_type: str,
    hash_cls: type[hashes.HashAlgorithm],
) -> Check:
    declared = values.get(CONTENT_TYPE)
    digest = values.get(MESSAGE_DIGEST)
    if declared is None or digest is None:
        return Check.fail("bad-signature", "signed attributes lack contentType or messageDigest")
    if len(declared) != 1 or len(digest) != 1:  # RFC 5652 section 11: exactly one value each
        return Check.fail(
            "bad-signature",
            f"contentType and messageDigest must hold one value each, not "
            f"{len(declared)} and {len(digest)}",
        )
    if declared[0].dotted != content_type:
        return Check.fail("bad-signature", "contentType attribute does not match the content")
    computed = hashlib.new(hash_cls.name, content).digest()
    if digest[0].native != computed:
        return Check.fail(
            "bad-signature", "messageDigest does not match the signed content (altered)"
        )
    return Check.passed()


def _verify_signature(
    cert: x509.Certificate,
    algorithm: cms.SignedDigestAlgorithm,
    signature: bytes,
    data: bytes,
    hash_cls: type[hashes.HashAlgorithm],
) -> Check:
    try:
        key = cert.public_key()
        family = algorithm.signature_algo
        if family == "rsassa_pkcs1v15" and isinstance(key, rsa.RSAPublicKey):
            key.verify(signature, data, padding.PKCS1v15(), _hash(algorithm, hash_cls))
        elif family == "rsassa_pss" and isinstance(key, rsa.RSAPublicKey):
            key.verify(signature, data, _pss(algorithm["parameters"]), _pss_hash(algorithm))
        elif family == "ecdsa" and isinstance(key, ec.EllipticCurvePublicKey):
            key.verify(signature, data, ec.ECDSA(_hash(algorithm, hash_cls)))
        elif family == "ed25519" and isinstance(key, ed25519.Ed25519PublicKey):
            key.verify(signature, data)
        elif family == "dsa":
            return Check.fail("weak-algorithm", "DSA signatures are not accepted for S/MIME")
        else:
            return Check.fail(
                "bad-signature",
                f"signature algorithm {family} does not fit the signer's key",
            )
    except InvalidSignature:
        return Check.fail("bad-signature", "the signature does not verify with the signer's key")
    except (ValueError, UnsupportedAlgorithm) as exc:
        return Check.fail("bad-signature", f"the signature cannot be checked: {exc}")
    return Check.passed(family)


def _signature_hash(algorithm: cms.SignedDigestAlgorithm, digest_name: str) -> str:
    """The hash the signature algorithm uses: named by a combined OID, else the digest's."""
    return _named_hash(algorithm) or digest_name


def _hash(
    algorithm: cms.SignedDigestAlgorithm, fallback: type[hashes.HashAlgorithm]
) -> hashes.HashAlgorithm:
    """The hash a combined OID names (sha256WithRSA...), else the SignerInfo's digest."""
    name = _named_hash(algorithm)
    return fallback() if name is None else _HASHES.get(name, fallback)()


def _named_hash(algorithm: cms.SignedDigestAlgorithm) -> str | None:
    """The hash a signature AlgorithmIdentifier names itself, None when it names none.

    asn1crypto answers "none" (rsaEncryption, the usual case) with an exception whose message
    costs more than the RSA verification, so the answer is kept per encoding.
    """
    der = algorithm.dump()
    if len(der) <= MAX_CACHED_ALGORITHM_BYTES:
        return _hash_named_by_der(der)
    try:
        return algorithm.hash_algo
    except ValueError:
        return None


@functools.lru_cache(maxsize=64)
def _hash_named_by_der(der: bytes) -> str | None:
    try:
        return cms.SignedDigestAlgorithm.load(der).hash_algo
    except ValueError:
        return None


def _pss_hash(algorithm: cms.SignedDigestAlgorithm) -> hashes.HashAlgorithm:
    name = algorithm["parameters"]["hash_algorithm"]["algorithm"].native
    if name not in _HASHES:
        raise ValueError(f"RSA-PSS with hash {name}")
    return _HASHES[name]()


def _pss(params: asn1.Asn1Value) -> padding.PSS:
    mgf = params["mask_gen_algorithm"]
    if mgf["algorithm"].native != "mgf1":
        raise ValueError("RSA-PSS with a mask generation function other than MGF1")
    mgf_hash = mgf["parameters"]["algorithm"].native
    if mgf_hash not in _HASHES:
        raise ValueError(f"RSA-PSS MGF1 with hash {mgf_hash}")
    return padding.PSS(padding.MGF1(_HASHES[mgf_hash]()), params["salt_length"].native)


def find_certificate(
    sid: cms.SignerIdentifier, bag: list[x509.Certificate]
) -> x509.Certificate | None:
    """The certificate a SignerIdentifier names: issuer and serial, or subject key identifier."""
    if sid.name == "issuer_and_serial_number":
        return _by_issuer_serial(sid.chosen, bag)
    return _by_key_id(sid.chosen.native, bag)


def _by_issuer_serial(
    ref: cms.IssuerAndSerialNumber, bag: list[x509.Certificate]
) -> x509.Certificate | None:
    issuer = ref["issuer"]
    serial = ref["serial_number"].native
    candidates = [cert for cert in bag if cert.serial_number == serial]
    encoded = issuer.dump()
    for cert in candidates:
        if cert.issuer.public_bytes() == encoded:
            return cert
    for cert in candidates:
        # Same name, other encoding: compare as RFC 5280 says (string types, case folded).
        if asn1_x509.Name.load(cert.issuer.public_bytes()) == issuer:
            return cert
    return None


def _encryption_preference(
    values: dict[str, asn1.Asn1Value], bag: list[x509.Certificate]
) -> x509.Certificate | None:
    """The certificate named by SMIMEEncryptionKeyPreference (RFC 8551) or Microsoft's twin.

    The signature has verified by now: a preference that cannot be parsed is ignored.
    """
    standard = values.get(SMIME_ENCRYPTION_KEY_PREFERENCE)
    microsoft = values.get(MS_ENCRYPTION_KEY_PREFERENCE)
    return _preference(
        None if standard is None else standard.contents,
        None if microsoft is None else microsoft.contents,
        bag,
        lambda element: _by_issuer_serial(cms.IssuerAndSerialNumber.load(element), bag),
    )


def _preference(
    standard: bytes | None,
    microsoft: bytes | None,
    bag: list[x509.Certificate],
    by_issuer_serial: Callable[[bytes], x509.Certificate | None],
) -> x509.Certificate | None:
    """:func:`_encryption_preference` from the contents of the two attributes' value sets;
    ``by_issuer_serial`` finds the certificate an IssuerAndSerialNumber element names."""
    try:
        if standard is not None:
            preference = _EncryptionKeyPreference.load(standard)
            if preference.name == "issuer_and_serial_number":
                return _by_issuer_serial(preference.chosen, bag)
            if preference.name == "recipient_key_id":
                return _by_key_id(preference.chosen["subject_key_identifier"].native, bag)
            return _by_key_id(preference.chosen.native, bag)
        if microsoft is not None:
            return by_issuer_serial(microsoft)
    except (ValueError, TypeError, KeyError):
        return None
    return None


def _by_key_id(key_id: bytes, bag: list[x509.Certificate]) -> x509.Certificate | None:
    for cert in bag:
        try:
            ski = cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
        except x509.ExtensionNotFound:
            continue
        if ski.value.digest == key_id:
            return cert
    return None
