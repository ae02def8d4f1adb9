"""The certificates and CRLs of a CMS SignedData as the exact bytes they arrived in.

A certificate's signature covers its exact encoding. Re-encoding a parsed certificate (as
asn1crypto does once anything has touched its fields) can change those bytes, e.g. a
subjectUniqueID BIT STRING, and then the CA's signature no longer verifies and a stored
certificate would hold bytes its CA never signed. So the members are cut out of the message's
own bytes by walking the BER/DER structure, never re-serialised.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from asn1crypto import x509 as asn1_x509

#: Nesting the walker follows before it gives up (the members sit at depth 4).
MAX_DEPTH = 8

_SEQUENCE = 0x30
_SET = 0x31
_CERTIFICATES = 0xA0  # [0] IMPLICIT CertificateSet
_CRLS = 0xA1  # [1] IMPLICIT RevocationInfoChoices


class RawCMSError(ValueError):
    """The bytes are not the BER/DER structure of a SignedData."""


@dataclass
class Members:
    certificates: list[bytes] = field(default_factory=list)
    crls: list[bytes] = field(default_factory=list)


@dataclass(frozen=True)
class _Element:
    tag: int
    start: int  # first byte of the tag
    body: int  # first byte of the contents
    end: int  # one past the last byte of the element (end-of-contents included)
    content_end: int  # one past the last content byte


def _element(data: bytes, pos: int, limit: int, depth: int = 0) -> _Element:
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
        while True:
            if cursor + 2 > limit:
                raise RawCMSError("missing end-of-contents")
            if data[cursor] == 0 and data[cursor + 1] == 0:
                return _Element(tag, pos, body, cursor + 2, cursor)
            cursor = _element(data, cursor, limit, depth + 1).end
    else:
        count = first & 0x7F
        if count > 4 or body + count > limit:
            raise RawCMSError("bad length")
        end = body + count + int.from_bytes(data[body : body + count], "big")
        body += count
    if end > limit:
        raise RawCMSError("element runs past its container")
    return _Element(tag, pos, body, end, end)


def _children(data: bytes, parent: _Element, depth: int) -> list[_Element]:
    found = []
    cursor = parent.body
    while cursor < parent.content_end:
        child = _element(data, cursor, parent.content_end, depth)
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
    found = Members()
    for part in _children(cms_der, explicit[0], 3):
        if part.tag not in (_CERTIFICATES, _CRLS):
            continue
        into = found.certificates if part.tag == _CERTIFICATES else found.crls
        for member in _children(cms_der, part, 4):
            # Other choices are context-tagged (attribute certificates, other formats).
            if member.tag == _SEQUENCE:
                if member.content_end != member.end:
                    raise RawCMSError("a certificate or CRL in indefinite-length form")
                into.append(cms_der[member.start : member.end])
    return found


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
