"""The crypto floor: the cryptography every message needs, alone, timed in the same run.

Per message: the DKIM signature (RSA-2048 PKCS#1 v1.5 over the canonical signed headers, with
``cryptography`` instead of dkimpy's pure-Python RSA), the CMS signer's signature over its signed
attributes, each certificate signature of the chain (leaf by intermediate, intermediate by root,
``verify_directly_issued_by``), and the SHA-256 digests of the DKIM body and of the S/MIME signed
content. Inputs are extracted before timing and each operation is checked once, so the floor
measures exactly the verifications the pipeline must do and nothing else.
"""

from __future__ import annotations

import base64
import hashlib
import re
import time
from dataclasses import dataclass

import dkim
from asn1crypto import cms
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from dkim.canonicalization import CanonicalizationPolicy

from bench import BenchError
from bench.corpus import Corpus
from smime_collector.message import ParsedMessage, parse_message
from smime_collector.smime import SignedPart, find_certificate, find_signature


@dataclass(frozen=True)
class FloorItem:
    dkim_key: rsa.RSAPublicKey
    dkim_signature: bytes
    dkim_signed_headers: bytes
    dkim_body: bytes
    content: bytes
    cms_key: rsa.RSAPublicKey
    cms_signature: bytes
    cms_signed_attrs: bytes
    leaf: x509.Certificate
    intermediate: x509.Certificate
    root: x509.Certificate


@dataclass(frozen=True)
class FloorResult:
    messages: int
    rsa_seconds: float
    digest_seconds: float

    @property
    def per_message(self) -> float:
        return (self.rsa_seconds + self.digest_seconds) / self.messages

    @property
    def rsa_per_message(self) -> float:
        return self.rsa_seconds / self.messages

    @property
    def digest_per_message(self) -> float:
        return self.digest_seconds / self.messages


class _Capture:
    """A hasher stand-in for dkimpy's ``hash_headers`` that keeps the bytes it is fed."""

    def __init__(self) -> None:
        self.parts: list[bytes] = []

    def update(self, data: bytes) -> None:
        self.parts.append(data)


def _dkim_key(record: str) -> rsa.RSAPublicKey:
    tags = dict(part.strip().split("=", 1) for part in record.split(";") if "=" in part)
    key = serialization.load_der_public_key(base64.b64decode(tags["p"]))
    if not isinstance(key, rsa.RSAPublicKey):
        raise BenchError("the bench DKIM keys are RSA")
    return key


def _dkim_inputs(parsed: ParsedMessage) -> tuple[bytes, bytes, bytes, str]:
    """(signature, canonical signed headers, canonical body, key record name) of DKIM sig 0."""
    verifier = dkim.DKIM(parsed.raw)
    prep = verifier.verify_headerprep(0)
    if not prep:
        raise BenchError("corpus message without DKIM-Signature")
    sig, include_headers, sigheaders = prep
    policy = CanonicalizationPolicy.from_c_value(sig.get(b"c", b"simple/simple"))
    body = policy.canonicalize_body(verifier.body)
    if hashlib.sha256(body).digest() != base64.b64decode(re.sub(rb"\s+", b"", sig[b"bh"])):
        raise BenchError("DKIM body hash of a corpus message does not match")
    if b"from" in include_headers:
        include_headers.append(b"from")  # as dkimpy does (bug 644046)
    capture = _Capture()
    headers = policy.canonicalize_headers(verifier.headers)
    dkim.hash_headers(capture, policy, headers, include_headers, sigheaders[0], sig)
    signature = base64.b64decode(re.sub(rb"\s+", b"", sig[b"b"]))
    name = f"{sig[b's'].decode()}._domainkey.{sig[b'd'].decode()}"
    return signature, b"".join(capture.parts), body, name


def prepare(corpus: Corpus) -> list[FloorItem]:
    items = []
    for message in corpus.messages:
        parsed = parse_message(message.raw)
        if not isinstance(parsed, ParsedMessage):
            raise BenchError(f"corpus message does not parse: {parsed.detail}")
        part = find_signature(parsed.top)
        if not isinstance(part, SignedPart) or part.content is None:
            raise BenchError("corpus message is not multipart/signed")
        signature, signed_headers, body, name = _dkim_inputs(parsed)
        signed = cms.ContentInfo.load(part.cms_der)["content"]
        signer = signed["signer_infos"][0]
        bag = [x509.load_der_x509_certificate(c.chosen.dump()) for c in signed["certificates"]]
        leaf = find_certificate(signer["sid"], bag)
        key = leaf.public_key() if leaf is not None else None
        if leaf is None or not isinstance(key, rsa.RSAPublicKey):
            raise BenchError("corpus signer certificate missing or not RSA")
        items.append(
            FloorItem(
                dkim_key=_dkim_key(corpus.dns_records[name]),
                dkim_signature=signature,
                dkim_signed_headers=signed_headers,
                dkim_body=body,
                content=part.content,
                cms_key=key,
                cms_signature=signer["signature"].native,
                cms_signed_attrs=signer["signed_attrs"].untag().dump(),
                leaf=leaf,
                intermediate=corpus.intermediate,
                root=corpus.root,
            )
        )
    _rsa(items)  # raises InvalidSignature if the floor would not verify what the pipeline does
    return items


def _rsa(items: list[FloorItem]) -> None:
    pkcs1, sha256 = padding.PKCS1v15(), hashes.SHA256()
    for item in items:
        item.dkim_key.verify(item.dkim_signature, item.dkim_signed_headers, pkcs1, sha256)
        item.cms_key.verify(item.cms_signature, item.cms_signed_attrs, pkcs1, sha256)
        item.leaf.verify_directly_issued_by(item.intermediate)
        item.intermediate.verify_directly_issued_by(item.root)


def _digests(items: list[FloorItem]) -> None:
    for item in items:
        hashlib.sha256(item.dkim_body).digest()
        hashlib.sha256(item.content).digest()


def measure(items: list[FloorItem], repeats: int) -> FloorResult:
    """Best of ``repeats`` timings of the RSA verifications and of the digests."""
    rsa_best = digest_best = float("inf")
    for _ in range(max(1, repeats)):
        start = time.perf_counter()
        _rsa(items)
        middle = time.perf_counter()
        _digests(items)
        end = time.perf_counter()
        rsa_best = min(rsa_best, middle - start)
        digest_best = min(digest_best, end - middle)
    return FloorResult(len(items), rsa_best, digest_best)
