"""Fully valid DKIM + S/MIME signed messages for an address, and the keys to break them.

:class:`MailFactory` owns a test root CA (written to a file for ``trusted-certs``), one S/MIME
certificate per address and one DKIM key per domain, published on the loopback DNS server under
a selector unique to the factory (so other tests' records never collide with ours). RSA key
generation is the slow part, so build one factory per module and let it cache.

Besides ``dkimpy``'s own signing (:func:`dkim_sign`), two honest ways to make signatures that
``dkimpy`` refuses to make:

- :func:`weak_rsa_key`: ``cryptography`` will not generate RSA keys below 1024 bits, so
  512/768-bit keys come from the ``openssl`` CLI.
- :func:`dkim_sign_without_from`: ``dkim.sign`` raises ``ParameterError`` when ``From`` is not
  in ``include_headers``; this builds the same header through ``dkimpy``'s own ``gen_header``
  (the code ``sign`` ends in), so the signature is genuine and verifies with ``dkim.verify``.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import secrets
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import dkim
from cryptography.hazmat.primitives import serialization
from dkim.canonicalization import CanonicalizationPolicy
from dkim.crypto import parse_pem_private_key

from tests import pki
from tests.dnsserver import LoopbackDNS

CRLF = b"\r\n"
TEXT = "Please send me encrypted mail from now on.\n"


@dataclass(frozen=True)
class SigningKey:
    """An RSA DKIM key: the PKCS#1 PEM dkimpy signs with and the TXT record to publish."""

    private_pem: bytes
    txt: str
    bits: int


def rsa_key(bits: int = 2048) -> SigningKey:
    """A DKIM key from ``cryptography`` (1024 bits and up)."""
    generated = pki.DKIMKey(bits=bits)
    pem = generated.key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    return SigningKey(pem, generated.txt_record(), bits)


def weak_rsa_key(bits: int) -> SigningKey:
    """A DKIM key below 1024 bits, which only the ``openssl`` CLI still generates."""
    pem = pki.run_openssl("genrsa", "-traditional", str(bits))
    with tempfile.TemporaryDirectory(prefix="dkimkey-") as tmp:
        (Path(tmp) / "key.pem").write_bytes(pem)
        der = pki.run_openssl("rsa", "-in", "key.pem", "-pubout", "-outform", "DER", cwd=Path(tmp))
    return SigningKey(pem, f"v=DKIM1; k=rsa; p={base64.b64encode(der).decode()}", bits)


def dkim_sign(
    raw: bytes,
    key: SigningKey,
    domain: str,
    selector: str,
    *,
    include_headers: Sequence[str] | None = None,
    length: bool = False,
    algorithm: bytes = b"rsa-sha256",
) -> bytes:
    """``raw`` with a dkimpy DKIM-Signature (c=relaxed/simple) prepended."""
    header = dkim.sign(
        raw,
        selector.encode(),
        domain.encode(),
        key.private_pem,
        signature_algorithm=algorithm,
        include_headers=None if include_headers is None else [h.encode() for h in include_headers],
        length=length,
        linesep=CRLF,
    )
    return header + raw


def dkim_sign_without_from(
    raw: bytes,
    key: SigningKey,
    domain: str,
    selector: str,
    include_headers: Sequence[str] = ("to", "subject", "date", "message-id", "content-type"),
) -> bytes:
    """A genuine rsa-sha256 signature whose ``h=`` lacks From (``DKIM.sign`` minus its check)."""
    assert "from" not in include_headers
    signer = dkim.DKIM(raw, linesep=CRLF)
    signer.signature_algorithm = b"rsa-sha256"
    signer.hasher = hashlib.sha256
    policy = CanonicalizationPolicy.from_c_value(b"relaxed/simple")
    body_hash = base64.b64encode(hashlib.sha256(policy.canonicalize_body(signer.body)).digest())
    names = [h.encode() for h in include_headers]
    fields = [
        (b"v", b"1"),
        (b"a", b"rsa-sha256"),
        (b"c", b"relaxed/simple"),
        (b"d", domain.encode()),
        (b"i", b"@" + domain.encode()),
        (b"q", b"dns/txt"),
        (b"s", selector.encode()),
        (b"t", str(int(time.time())).encode()),
        (b"h", b" : ".join(names)),
        (b"bh", body_hash),
        (b"b", b"0" * 60),
    ]
    private = parse_pem_private_key(key.private_pem)
    value = signer.gen_header(fields, names, policy, b"DKIM-Signature", private)
    return b"DKIM-Signature: " + value + raw


@dataclass
class MailFactory:
    """A root CA, per-address certificates and per-domain DKIM keys on the loopback DNS."""

    dns: LoopbackDNS
    root: pki.Identity
    ca_file: Path
    selector: str = field(default_factory=lambda: "s" + secrets.token_hex(4))
    _keys: dict[str, SigningKey] = field(default_factory=dict)
    _identities: dict[str, pki.Identity] = field(default_factory=dict)

    @classmethod
    def create(cls, dns: LoopbackDNS, folder: Path) -> MailFactory:
        """A factory whose root is written to ``folder/root.pem`` (the ``trusted-certs``)."""
        root = pki.make_root("Mail Factory Root")
        ca_file = folder / "root.pem"
        ca_file.write_bytes(root.cert_pem())
        return cls(dns, root, ca_file)

    # -- keys and certificates ---------------------------------------------------------------

    def record_name(self, domain: str, selector: str | None = None) -> str:
        return pki.DKIMKey.record_name(domain, selector or self.selector)

    def publish(
        self, domain: str, key: SigningKey, selector: str | None = None, ttl: int | None = None
    ) -> None:
        self.dns.add_txt(self.record_name(domain, selector), key.txt, ttl)

    def dkim_key(self, domain: str) -> SigningKey:
        """The domain's 2048-bit key, generated once and (re)published under the selector."""
        key = self._keys.get(domain)
        if key is None:
            key = self._keys[domain] = rsa_key()
        self.publish(domain, key)
        return key

    def identity(self, address: str) -> pki.Identity:
        """The address's certificate (issued by the root, valid from yesterday), made once."""
        found = self._identities.get(address)
        if found is None:
            found = self._identities[address] = pki.make_leaf(self.root, address)
        return found

    def leaf(self, address: str, not_before: dt.datetime) -> pki.Identity:
        """A fresh certificate for ``address`` with the given notBefore (not cached)."""
        return pki.make_leaf(self.root, address, not_before=not_before)

    # -- messages ----------------------------------------------------------------------------

    def smime(
        self,
        from_header: str,
        signer: pki.Identity,
        *,
        text: str = TEXT,
        extra_headers: Sequence[tuple[str, str]] = (),
    ) -> bytes:
        """A detached-signed (``openssl cms``) message ``From: from_header``, no DKIM yet."""
        entity = pki.sign_detached(pki.mime_body(text), signer)
        return pki.message(entity, from_addr=from_header, extra_headers=extra_headers)

    def signed(
        self,
        address: str,
        *,
        signer: pki.Identity | None = None,
        from_header: str | None = None,
        dkim_domain: str | None = None,
        length: bool = False,
    ) -> bytes:
        """A message that passes every check for ``address``, unless an option says otherwise.

        ``signer`` defaults to the address's own certificate, ``from_header`` to the address,
        ``dkim_domain`` to the address's domain; ``length=True`` adds ``l=``.
        """
        raw = self.smime(from_header or address, signer or self.identity(address))
        domain = dkim_domain or address.rpartition("@")[2]
        return dkim_sign(raw, self.dkim_key(domain), domain, self.selector, length=length)
