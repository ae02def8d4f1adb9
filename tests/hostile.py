"""The hostile mail of issue 10, rebuilt: each message (and the DNS records it needs) that once
killed a worker, cost seconds, or was retried for ever.

Used by the tests (each case must end in its verdict, within its bound) and by
``bench/dos.py`` (which times each case). An attacker needs no token: the mail arrives
through the relay, DKIM-signed by a domain the attacker owns (``attacker.example`` here,
whose keys the attacker publishes on the loopback DNS server).

Signatures that would cost the signer as much as the verifier (ten thousand ``h=`` names over
a thousand headers) are written by hand: the body hash ``bh=`` is computed with dkimpy's own
canonicalisation, so a verifier gets past it, and ``b=`` is random, since the cost comes before
the RSA step.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field

from asn1crypto import algos, cms, core, keys
from asn1crypto import x509 as asn1_x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding
from cryptography.hazmat.primitives.serialization import Encoding
from dkim.canonicalization import CanonicalizationPolicy

from tests import pki
from tests.dnsserver import LoopbackDNS
from tests.mailfactory import SigningKey, dkim_sign, rsa_key

CRLF = b"\r\n"
ATTACKER_DOMAIN = "attacker.example"
ATTACKER = f"mallory@{ATTACKER_DOMAIN}"


def smime_shell(from_addr: str, extra_headers: Sequence[bytes] = ()) -> bytes:
    """A small message shaped like an S/MIME signed one, so the pipeline reaches DKIM.

    Its signature part is junk: a message whose DKIM passed would end at the CMS stage.
    """
    headers = [
        f"From: {from_addr}".encode(),
        b"To: secureme@inbound.example.net",
        b"Subject: hello",
        b"Date: Sat, 28 Nov 2026 12:00:00 +0000",
        b"Message-ID: <hostile@attacker.example>",
        b"MIME-Version: 1.0",
        *extra_headers,
        b'Content-Type: multipart/signed; protocol="application/pkcs7-signature";'
        b' micalg=sha-256; boundary="b"',
    ]
    body = (
        b"--b\r\nContent-Type: text/plain\r\n\r\nhello\r\n"
        b'--b\r\nContent-Type: application/pkcs7-signature; name="smime.p7s"\r\n'
        b"Content-Transfer-Encoding: base64\r\n\r\nMIIBAAAA\r\n--b--\r\n"
    )
    return CRLF.join(headers) + CRLF + CRLF + body


def body_hash(raw: bytes, c: bytes = b"relaxed/simple") -> bytes:
    """``bh=`` for ``raw`` as dkimpy computes it (sha256 over the canonical body)."""
    body = raw.split(CRLF + CRLF, 1)[1]
    canonical = CanonicalizationPolicy.from_c_value(c).canonicalize_body(body)
    return base64.b64encode(hashlib.sha256(canonical).digest())


def forged_signature(
    raw: bytes,
    domain: str,
    selector: str,
    names: Sequence[str] = ("from",),
    b_bytes: int = 128,
) -> bytes:
    """A DKIM-Signature header line with a correct ``bh=`` and a random ``b=``."""
    junk_b = base64.b64encode(secrets.token_bytes(b_bytes))
    return (
        b"DKIM-Signature: v=1; a=rsa-sha256; c=relaxed/simple; d="
        + domain.encode()
        + b"; s="
        + selector.encode()
        + b"; h="
        + b":".join(n.encode() for n in names)
        + b"; bh="
        + body_hash(raw)
        + b"; b="
        + junk_b
        + CRLF
    )


def rsa_record(modulus: int, exponent: int) -> str:
    """A DKIM TXT record for any RSA numbers (``cryptography`` refuses absurd ones)."""
    spki = keys.PublicKeyInfo(
        {
            "algorithm": {"algorithm": "rsa"},
            "public_key": keys.RSAPublicKey({"modulus": modulus, "public_exponent": exponent}),
        }
    )
    return "v=DKIM1; k=rsa; p=" + base64.b64encode(spki.dump()).decode()


def random_odd(bits: int) -> int:
    return secrets.randbits(bits) | (1 << (bits - 1)) | 1


@dataclass
class Attacker:
    """The attacker's domain, its genuine 1024-bit DKIM key, and records on the loopback DNS."""

    dns: LoopbackDNS
    domain: str = ATTACKER_DOMAIN
    selector: str = field(default_factory=lambda: "a" + secrets.token_hex(4))
    key: SigningKey = field(default_factory=lambda: rsa_key(1024))

    def __post_init__(self) -> None:
        self.publish(self.selector, self.key.txt)

    @property
    def address(self) -> str:
        return f"mallory@{self.domain}"

    def publish(self, selector: str, txt: str) -> None:
        self.dns.add_txt(f"{selector}._domainkey.{self.domain}", txt)

    def sign(self, raw: bytes, selector: str | None = None) -> bytes:
        return dkim_sign(raw, self.key, self.domain, selector or self.selector)

    # -- the cases -----------------------------------------------------------------------------

    def huge_exponent(self, bits: int, exponent_bits: int | None = None) -> bytes:
        """A 1.75 KB mail whose key has a ``bits``-bit modulus and a huge public exponent."""
        selector = f"exp{bits}-{secrets.token_hex(3)}"
        exponent = random_odd(exponent_bits or bits - 1)
        self.publish(selector, rsa_record(random_odd(bits), exponent))
        return self.sign(smime_shell(self.address), selector)

    def huge_modulus(self, bits: int) -> bytes:
        """A key with a ``bits``-bit modulus and e = 65537 (300,000 bits: a 50 KB TXT record)."""
        selector = f"mod{bits}-{secrets.token_hex(3)}"
        self.publish(selector, rsa_record(random_odd(bits), 65537))
        return self.sign(smime_shell(self.address), selector)

    def silent_selectors(self, count: int) -> bytes:
        """``count`` aligned signatures whose selectors nobody answers (DNS in "drop" mode)."""
        raw = smime_shell(self.address)
        for i in range(count):
            raw = self.sign(raw, f"silent{i}-{secrets.token_hex(3)}")
        return raw

    def third_party_selectors(self, count: int) -> bytes:
        """``count`` signatures naming other people's domains: each one a query to them."""
        raw = smime_shell(self.address)
        lines = b"".join(
            forged_signature(raw, f"victim{i}.example", f"s{i}", b_bytes=12) for i in range(count)
        )
        return lines + raw

    def junk_signatures(self, count: int) -> bytes:
        """``count`` short DKIM-Signature headers of the attacker's own domain (~57 bytes each)."""
        raw = smime_shell(self.address)
        line = f"DKIM-Signature: v=1; a=rsa-sha256; d={self.domain}; s=j; b=QQ==\r\n".encode()
        return line * count + raw

    def folded_header(self, lines: int) -> bytes:
        """One header folded over ``lines`` continuation lines, then a genuine signature."""
        fold = b"X-Fold: start" + CRLF + b" y\r\n" * lines
        raw = smime_shell(self.address, [fold.rstrip(CRLF)])
        return self.sign(raw)

    def absent_h(self, names: int, filler_headers: int = 1000) -> bytes:
        """``h=`` naming ``names`` absent headers over a message with many headers."""
        filler = [f"X-Filler-{i}: {i}".encode() for i in range(filler_headers)]
        raw = smime_shell(self.address, filler)
        absent = ["from", *(f"x-absent-{i}" for i in range(names))]
        return forged_signature(raw, self.domain, self.selector, absent) + raw

    def leading_whitespace(self) -> bytes:
        """A header block whose first line is a continuation line: dkimpy raised IndexError."""
        return b" folded-onto-nothing\r\n" + self.sign(smime_shell(self.address))


# -- CMS SignedData with the attributes a test chooses -----------------------------------------

DATA_OID = "1.2.840.113549.1.7.1"
CONTENT_TYPE_OID = "1.2.840.113549.1.9.3"
MESSAGE_DIGEST_OID = "1.2.840.113549.1.9.4"


def der(tag: int, contents: bytes) -> bytes:
    """One DER TLV (definite length)."""
    size = len(contents)
    if size < 0x80:
        length = bytes([size])
    else:
        octets = size.to_bytes((size.bit_length() + 7) // 8, "big")
        length = bytes([0x80 | len(octets)]) + octets
    return bytes([tag]) + length + contents


def attribute(oid: str, values: Sequence[bytes]) -> bytes:
    """``Attribute ::= SEQUENCE { attrType OID, attrValues SET OF ANY }`` from DER values."""
    return der(0x30, core.ObjectIdentifier(oid).dump() + der(0x31, b"".join(values)))


def standard_attributes(content: bytes) -> list[bytes]:
    """contentType = data and the messageDigest (SHA-256) of ``content``."""
    return [
        attribute(CONTENT_TYPE_OID, [core.ObjectIdentifier(DATA_OID).dump()]),
        attribute(MESSAGE_DIGEST_OID, [core.OctetString(hashlib.sha256(content).digest()).dump()]),
    ]


def signed_data(content: bytes, signer: pki.Identity, attributes: Sequence[bytes]) -> bytes:
    """Detached SignedData over ``content`` whose signed attributes are exactly ``attributes``
    (in that order, DER as given), signed for real by ``signer``'s RSA key over the SET OF."""
    contents = b"".join(attributes)
    signature = signer.key.sign(der(0x31, contents), padding.PKCS1v15(), hashes.SHA256())
    cert = signer.cert
    sid = cms.IssuerAndSerialNumber(
        {
            "issuer": asn1_x509.Name.load(cert.issuer.public_bytes()),
            "serial_number": cert.serial_number,
        }
    )
    sha256 = algos.DigestAlgorithm({"algorithm": "sha256"})
    signer_info = der(
        0x30,
        core.Integer(1).dump()
        + sid.dump()
        + sha256.dump()
        + der(0xA0, contents)
        + algos.SignedDigestAlgorithm({"algorithm": "sha256_rsa"}).dump()
        + core.OctetString(signature).dump(),
    )
    certificates = der(
        0xA0, b"".join(c.public_bytes(Encoding.DER) for c in [signer.cert, *signer.chain])
    )
    body = der(
        0x30,
        core.Integer(1).dump()
        + der(0x31, sha256.dump())
        + der(0x30, core.ObjectIdentifier(DATA_OID).dump())
        + certificates
        + der(0x31, signer_info),
    )
    return der(0x30, core.ObjectIdentifier("1.2.840.113549.1.7.2").dump() + der(0xA0, body))


def many_attributes(content: bytes, signer: pki.Identity, count: int) -> bytes:
    """SignedData with ``count`` junk signed attributes (11 bytes each) beside the real two."""
    junk = der(0x30, bytes.fromhex("06032a0304") + der(0x31, b"\x05\x00"))
    return signed_data(content, signer, [*standard_attributes(content), *[junk] * count])


def empty_value_set(content: bytes, signer: pki.Identity, which: str) -> bytes:
    """SignedData whose ``message-digest`` or ``content-type`` attribute has no value at all."""
    ctype, digest = standard_attributes(content)
    if which == "message-digest":
        digest = attribute(MESSAGE_DIGEST_OID, [])
    else:
        ctype = attribute(CONTENT_TYPE_OID, [])
    return signed_data(content, signer, [ctype, digest])


def detached_message(
    content: bytes, der_bytes: bytes, from_addr: str, extra_headers: Sequence[tuple[str, str]] = ()
) -> bytes:
    """A whole ``multipart/signed`` message around ``content`` and the SignedData ``der_bytes``."""
    entity = pki._multipart_signed(content, der_bytes, "sha-256")
    return pki.message(entity, from_addr=from_addr, extra_headers=extra_headers)


# -- MIME nesting ------------------------------------------------------------------------------


def nested_message(from_addr: str, depth: int, payload_bytes: int) -> bytes:
    """A ``depth``-deep multipart/mixed tree around one big text leaf (a copy per level once
    cost the whole message again at each level). Built with one join, so that building it
    needs no more than twice its size."""
    heads, tails = [], []
    for level in reversed(range(depth)):
        boundary = f"level{level}".encode()
        heads.append(
            b'Content-Type: multipart/mixed; boundary="' + boundary + b'"\r\n\r\n'
            b"--" + boundary + CRLF
        )
        tails.append(CRLF + b"--" + boundary + b"--\r\n")
    leaf = [b"Content-Type: text/plain\r\n\r\n", (b"x" * 998 + CRLF) * (payload_bytes // 1000)]
    top = f"From: {from_addr}\r\nMIME-Version: 1.0\r\n".encode()
    return b"".join([top, *heads, *leaf, *reversed(tails)])
