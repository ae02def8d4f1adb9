"""The certificates and CRLs of a CMS SignedData as the exact bytes they arrived in.

A certificate's signature covers its exact encoding. Re-encoding a parsed certificate (as
asn1crypto does once anything has touched its fields) can change those bytes, e.g. a
subjectUniqueID BIT STRING, and then the CA's signature no longer verifies and a stored
certificate would hold bytes its CA never signed. So the members are cut out of the message's
own bytes by walking the BER/DER structure, never re-serialised.

The same walker reads a SignedData of the plain shape mail clients send
(:func:`plain_signed_data`): each part of each SignerInfo as its exact bytes, so that the
signature check parses no more than the few small values it reads (asn1crypto's lazy parsing
of the whole structure was the larger part of verifying a signature).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import NamedTuple

from asn1crypto import x509 as asn1_x509

#: Nesting the walker follows before it gives up (the members sit at depth 4).
MAX_DEPTH = 8

_SEQUENCE = 0x30
_SET = 0x31
_OID = 0x06
_INTEGER = 0x02
#: id-signedData, as its DER OID element.
SIGNED_DATA_OID = bytes.fromhex("06092a864886f70d010702")
#: The plain field tags: SignedData (version, digestAlgorithms, encapContentInfo,
#: [0] certificates, [1] crls, signerInfos) and SignerInfo (version, sid as issuerAndSerial
#: or [0] subjectKeyIdentifier, digestAlgorithm, [0] signedAttrs, signatureAlgorithm,
#: signature, [1] unsignedAttrs).
_SIGNED_DATA_TAGS = re.compile(rb"\x02\x31\x30\xa0?\xa1?\x31")
_SIGNER_INFO_TAGS = re.compile(rb"\x02[\x30\x80]\x30\xa0?\x30\x04\xa1?")
_CERTIFICATES = 0xA0  # [0] IMPLICIT CertificateSet
_CRLS = 0xA1  # [1] IMPLICIT RevocationInfoChoices


class RawCMSError(ValueError):
    """The bytes are not the BER/DER structure of a SignedData."""


@dataclass
class Members:
    certificates: list[bytes] = field(default_factory=list)
    crls: list[bytes] = field(default_factory=list)


class _Element(NamedTuple):  # a tuple: a message has dozens, and a dataclass costs 3x more
    tag: int
    start: int  # first byte of the tag
    body: int  # first byte of the contents
    end: int  # one past the last byte of the element (end-of-contents included)
    content_end: int  # one past the last content byte


#: Indefinite-length elements already walked, by where they start: the element and its
#: children. Finding the end of such an element walks its children, and every level above
#: it would walk them again.
_Memo = dict[int, tuple[_Element, list[_Element]]]


def _element(
    data: bytes, pos: int, limit: int, depth: int = 0, memo: _Memo | None = None
) -> _Element:
    if memo is not None and (known := memo.get(pos)) is not None and known[0].end <= limit:
        return known[0]
    if depth > MAX_DEPTH:
        raise RawCMSError("nested too deeply")
    if pos + 2 > limit:
        raise RawCMSError("truncated element")
    tag = data[pos]
    if tag & 0x1F == 0x1F:
        raise RawCMSError("multi-byte tags do not occur in SignedData")
    first = data[pos + 1]
    body = pos + 2
    if first < 0x80:
        end = body + first
    elif first == 0x80:  # BER indefinite length: contents run to an end-of-contents marker
        if not tag & 0x20:
            raise RawCMSError("indefinite length on a primitive element")
        cursor = body
        walked: list[_Element] = []
        while True:
            if cursor + 2 > limit:
                raise RawCMSError("missing end-of-contents")
            if data[cursor] == 0 and data[cursor + 1] == 0:
                element = _Element(tag, pos, body, cursor + 2, cursor)
                if memo is not None:
                    memo[pos] = (element, walked)
                return element
            child = _element(data, cursor, limit, depth + 1, memo)
            if memo is not None:
                walked.append(child)
            cursor = child.end
    else:
        count = first & 0x7F
        if count > 4 or body + count > limit:
            raise RawCMSError("bad length")
        end = body + count + int.from_bytes(data[body : body + count], "big")
        body += count
    if end > limit:
        raise RawCMSError("element runs past its container")
    return _Element(tag, pos, body, end, end)


def _children(
    data: bytes, parent: _Element, depth: int, memo: _Memo | None = None
) -> list[_Element]:
    if memo is not None and (known := memo.get(parent.start)) is not None:
        return known[1]
    found = []
    cursor = parent.body
    while cursor < parent.content_end:
        child = _element(data, cursor, parent.content_end, depth, memo)
        found.append(child)
        cursor = child.end
    return found


def members(cms_der: bytes) -> Members:
    """Certificates (``Certificate`` choices only) and CRLs (``CertificateList`` choices
    only) of the ContentInfo/SignedData in ``cms_der``, each as its exact bytes."""
    top = _element(cms_der, 0, len(cms_der))
    content_info = _children(cms_der, top, 1)
    if len(content_info) < 2 or content_info[1].tag != 0xA0:
        raise RawCMSError("ContentInfo without content")
    explicit = _children(cms_der, content_info[1], 2)
    if not explicit or explicit[0].tag != _SEQUENCE:
        raise RawCMSError("SignedData is not a SEQUENCE")
    return _members_of(cms_der, _children(cms_der, explicit[0], 3))


def _members_of(cms_der: bytes, signed_data: list[_Element], memo: _Memo | None = None) -> Members:
    found = Members()
    for part in signed_data:
        if part.tag not in (_CERTIFICATES, _CRLS):
            continue
        into = found.certificates if part.tag == _CERTIFICATES else found.crls
        for member in _children(cms_der, part, 4, memo):
            # Other choices are context-tagged (attribute certificates, other formats).
            if member.tag == _SEQUENCE:
                if member.content_end != member.end:
                    raise RawCMSError("a certificate or CRL in indefinite-length form")
                into.append(cms_der[member.start : member.end])
    return found


@dataclass
class PlainSigner:
    """A SignerInfo of the plain shape, as the exact bytes of its parts."""

    sid: bytes  # the whole SignerIdentifier element
    digest_algorithm: bytes  # the whole AlgorithmIdentifier element
    signed_attrs: bytes | None  # the contents of [0] signedAttrs; None when there are none
    attributes: list[tuple[bytes, bytes]]  # per signed attribute: its OID and value SET
    signature_algorithm: bytes  # the whole AlgorithmIdentifier element
    signature: bytes  # the contents of the signature OCTET STRING


@dataclass
class PlainSignedData:
    """A SignedData of the plain shape: its members, eContentType and signers."""

    members: Members
    content_type: bytes  # the whole eContentType OID element
    signers: list[PlainSigner]


def plain_signed_data(cms_der: bytes) -> PlainSignedData | None:
    """The SignedData in ``cms_der`` read by this walker alone, when it has the plain shape
    mail clients send: every field in its place with its universal tag, definite-length
    signed attributes of exactly a type and a value set, primitive OCTET STRING signatures.
    Anything else is None, and the caller reads the structure with asn1crypto (whose lazy
    parsing costs several times more: it is the larger part of verifying a signature)."""
    memo: _Memo = {}
    top = _element(cms_der, 0, len(cms_der), 0, memo)
    content_info = _children(cms_der, top, 1, memo)
    if (
        top.tag != _SEQUENCE
        or len(content_info) != 2
        or content_info[0].tag != _OID
        or _bytes(cms_der, content_info[0]) != SIGNED_DATA_OID
        or content_info[1].tag != 0xA0
    ):
        return None
    explicit = _children(cms_der, content_info[1], 2, memo)
    if len(explicit) != 1 or explicit[0].tag != _SEQUENCE:
        return None
    fields = _children(cms_der, explicit[0], 3, memo)
    if not _SIGNED_DATA_TAGS.fullmatch(bytes(f.tag for f in fields)):
        return None
    encap = _children(cms_der, fields[2], 4, memo)
    if not 1 <= len(encap) <= 2 or encap[0].tag != _OID:
        return None
    if len(encap) == 2 and encap[1].tag != 0xA0:  # eContent [0]
        return None
    signers = []
    for info in _children(cms_der, fields[-1], 4, memo):
        signer = _plain_signer(cms_der, info, memo) if info.tag == _SEQUENCE else None
        if signer is None:
            return None
        signers.append(signer)
    members = _members_of(cms_der, fields, memo)
    return PlainSignedData(members, _bytes(cms_der, encap[0]), signers)


def _plain_signer(data: bytes, info: _Element, memo: _Memo) -> PlainSigner | None:
    parts = _children(data, info, 5, memo)
    if not _SIGNER_INFO_TAGS.fullmatch(bytes(p.tag for p in parts)):
        return None
    sid, digest = parts[1], parts[2]
    signed_attrs: bytes | None = None
    attributes: list[tuple[bytes, bytes]] = []
    if parts[3].tag == 0xA0:
        attrs = parts[3]
        if attrs.content_end != attrs.end:
            return None
        signed_attrs = data[attrs.body : attrs.content_end]
        for attr in _children(data, attrs, 6, memo):
            pair = _children(data, attr, 7, memo) if attr.tag == _SEQUENCE else []
            if (
                attr.content_end != attr.end
                or len(pair) != 2
                or pair[0].tag != _OID
                or pair[1].tag != _SET
            ):
                return None
            attributes.append((_bytes(data, pair[0]), _bytes(data, pair[1])))
        parts = [*parts[:3], *parts[4:]]
    algorithm, signature = parts[3], parts[4]
    return PlainSigner(
        _bytes(data, sid),
        _bytes(data, digest),
        signed_attrs,
        attributes,
        _bytes(data, algorithm),
        data[signature.body : signature.content_end],
    )


def set_members(element: bytes) -> tuple[bytes, list[bytes]]:
    """The contents of the SET (or SEQUENCE) ``element`` and each member's exact bytes."""
    top = _element(element, 0, len(element))
    return element[top.body : top.content_end], [
        _bytes(element, member) for member in _children(element, top, 1)
    ]


def issuer_and_serial(element: bytes) -> tuple[bytes, int] | None:
    """The issuer Name (exact bytes) and serial number of an IssuerAndSerialNumber, when it
    is exactly a definite-length Name and a primitive INTEGER; None otherwise."""
    top = _element(element, 0, len(element))
    fields = _children(element, top, 1) if top.tag == _SEQUENCE else []
    if len(fields) != 2 or fields[0].tag != _SEQUENCE or fields[1].tag != _INTEGER:
        return None
    name, serial = fields
    if name.content_end != name.end:
        return None
    number = int.from_bytes(element[serial.body : serial.end], "big", signed=True)
    return _bytes(element, name), number


def contents(element: bytes) -> bytes:
    """The contents of one element (a primitive OCTET STRING's octets)."""
    top = _element(element, 0, len(element))
    return element[top.body : top.content_end]


def _bytes(data: bytes, element: _Element) -> bytes:
    return data[element.start : element.end]


def first_child(der: bytes) -> bytes:
    """The exact bytes of the first element inside the SEQUENCE ``der`` (a certificate's
    TBSCertificate)."""
    top = _element(der, 0, len(der))
    child = _element(der, top.body, top.content_end, 1)
    return der[child.start : child.end]


class _ExactTbs(asn1_x509.TbsCertificate):
    """A TBSCertificate whose encoding is the one it arrived in. asn1crypto re-encodes some
    fields on output (a subjectUniqueID BIT STRING, for one), and a signature checked over
    that re-encoding is checked over bytes the CA never signed."""

    _exact: bytes | None = None

    def dump(self, force: bool = False) -> bytes:
        return self._exact if self._exact is not None and not force else super().dump(force)


class _ExactCertificate(asn1_x509.Certificate):
    _fields = [
        (name, _ExactTbs) if name == "tbs_certificate" else (name, *rest)
        for name, *rest in asn1_x509.Certificate._fields
    ]
    _exact: bytes | None = None

    def dump(self, force: bool = False) -> bytes:
        return self._exact if self._exact is not None and not force else super().dump(force)


def exact_certificate(der: bytes) -> asn1_x509.Certificate:
    """asn1crypto's view of a certificate that dumps, and has its signature checked over,
    exactly ``der``."""
    cert = _ExactCertificate.load(der)
    cert._exact = der
    tbs = cert["tbs_certificate"]
    tbs._exact = first_child(der)
    return cert
