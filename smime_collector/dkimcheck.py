"""DKIM: the From: address can be trusted only if its organisation signed the message.

Only signatures whose ``d=`` aligns with the From: domain (DMARC, RFC 7489 §3.1.1) are looked at
at all; the rest cost no DNS query and no hash, so a message naming a thousand other domains
costs a thousand tag parses and nothing more. The first aligned signature that verifies, covers
From: and the whole body, with an acceptable algorithm and key, decides; at most
:data:`MAX_SIGNATURES_EVALUATED` are tried.

Everything that bounds the work is checked before the work it bounds: the ``h=`` count before
any header is hashed, the body hash before the DNS query, the key's size and exponent on the
DNS record before any arithmetic. The pieces are dkimpy's public ones (tag parsing, field
validation, canonicalisation, header hashing); the RSA and Ed25519 steps are OpenSSL's, through
``cryptography``, instead of dkimpy's pure-Python ``pow`` (14.6 s for one hostile key).
"""

from __future__ import annotations

import base64
import binascii
import functools
import re
from collections import Counter, defaultdict
from dataclasses import dataclass, field

import dkim
from asn1crypto import keys as asn1_keys
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed
from dkim.canonicalization import (
    CanonicalizationPolicy,
    InvalidCanonicalizationPolicyError,
    Relaxed,
    compress_whitespace,
    correct_empty_body,
    strip_trailing_lines,
    strip_trailing_whitespace,
)
from dkim.util import InvalidTagValueList, parse_tag_value
from publicsuffixlist import PublicSuffixList

from smime_collector.boundedcache import cached_when_short
from smime_collector.deadline import Deadline, DeadlineExceeded
from smime_collector.dnskeys import DNSTempError, KeyResolver
from smime_collector.message import ParsedMessage, parse_message
from smime_collector.verdict import Check

MIN_KEY_BITS = 1024
#: Largest RSA modulus accepted (a 300,000-bit key once cost 2.4 s per signature).
MAX_KEY_BITS = 4096
#: Public exponents must be below this (a huge exponent cost 14.6 s per signature).
MAX_PUBLIC_EXPONENT = 2**32
#: Aligned signatures tried per message; the others are not evaluated.
MAX_SIGNATURES_EVALUATED = 5
#: Header field names one signature's ``h=`` may list (10,000 absent names took 9.2 s).
MAX_SIGNED_HEADERS = 64
#: Seconds all of one message's DKIM key lookups may take together, whatever ``dns-timeout``
#: says; always cut further to what is left of the request's own deadline.
MESSAGE_DNS_BUDGET_SECONDS = 10.0
#: Parsed key records kept per process (see :func:`parse_key_record`), and the longest record
#: kept: a 4096-bit RSA key takes about 800 bytes of TXT, and longer ones are refused anyway.
KEY_CACHE_SIZE = 1024
MAX_CACHED_RECORD_BYTES = 2048
#: Longest From: value (as DKIM splits it) whose address is kept once read.
MAX_CACHED_FROM_BYTES = 512

_HEADER_NAME = re.compile(rb"([\x21-\x7e]+?):")
_WHITESPACE = re.compile(rb"\s+")
_H_SEPARATOR = re.compile(rb"\s*:\s*")
_PSL = PublicSuffixList()

DKIM_MISSING = Check.fail("dkim-missing", "DKIM FAIL: the message has no DKIM-Signature")


class _HeaderError(Exception):
    """The header block cannot be split into fields the way dkimpy splits it."""


# -- alignment (RFC 7489 section 3.1.1) -------------------------------------------------------


@functools.lru_cache(maxsize=4096)
def organizational_domain(domain: str) -> str | None:
    """The registrable domain under the Public Suffix List: ``bank.co.uk`` for
    ``mail.bank.co.uk``; None for a public suffix itself (``co.uk``, ``github.io``)."""
    try:
        return _PSL.privatesuffix(domain)
    except (ValueError, UnicodeError):
        return None


def aligned(signing_domain: str, from_domain: str, mode: str) -> bool:
    """Strict: ``d=`` equals the From: domain. Relaxed: both have the same organisational
    domain, so ``d=mail.example.com`` aligns with ``example.com`` and the reverse, while a
    public suffix (``co.uk``, ``github.io``, ``com``) aligns with nothing below it."""
    d = signing_domain.lower().rstrip(".")
    f = from_domain.lower().rstrip(".")
    if not d or not f:
        return False
    if d == f:
        return True
    if mode != "relaxed":
        return False
    organisation = organizational_domain(d)
    return organisation is not None and organisation == organizational_domain(f)


def dns_budget(request: Deadline | None) -> Deadline:
    """One message's DNS deadline: :data:`MESSAGE_DNS_BUDGET_SECONDS`, within ``request``."""
    request = request or Deadline.never()
    end = min(request.end, request.clock() + MESSAGE_DNS_BUDGET_SECONDS)
    return Deadline(end, request.clock)


# -- the check ---------------------------------------------------------------------------------


@dataclass
class _Signed:
    """The message as DKIM reads it: header fields as dkimpy splits them, the body after."""

    msg: ParsedMessage
    headers: list[tuple[bytes, bytes]]
    body: bytes
    _bodies: dict[bytes, bytes] = field(default_factory=dict)

    def canonical_body(self, policy: CanonicalizationPolicy) -> bytes:
        """Canonicalised once per algorithm, however many signatures ask."""
        name = policy.body_algorithm.name
        if name not in self._bodies:
            if policy.body_algorithm is Relaxed:
                self._bodies[name] = relaxed_body(self.body)
            else:
                self._bodies[name] = policy.canonicalize_body(self.body)
        return self._bodies[name]


def relaxed_body(body: bytes) -> bytes:
    """dkimpy's ``Relaxed.canonicalize_body``, step by step, each of its regular-expression
    steps run only when it can change something: whitespace before a line end to strip, a tab
    or a run of blanks to compress. Each scans the whole body at about 10 ns a byte (60 µs for
    a 6 KB body) where a substring search takes well under one."""
    if b" \r\n" in body or b"\t\r\n" in body:
        body = strip_trailing_whitespace(body)
    if b"\t" in body or b"  " in body:
        body = compress_whitespace(body)
    return correct_empty_body(strip_trailing_lines(body))


def check_dkim(
    msg: ParsedMessage,
    resolver: KeyResolver,
    alignment: str,
    deadline: Deadline | None = None,
) -> Check:
    """The message's DKIM verdict; ``deadline`` is the request's (None: no request deadline)."""
    if "dkim-signature" not in msg.top.headers:
        return DKIM_MISSING  # spares the header split of unsigned mail
    try:
        headers = split_header_fields(msg.raw, msg.top.body_start)
    except _HeaderError as exc:
        return Check.fail("dkim-invalid", f"DKIM FAIL: headers cannot be parsed: {exc}")
    problem = _from_differs(headers, msg)
    if problem:
        return Check.fail("malformed", f"DKIM FAIL: {problem}")
    signatures = [i for i, (name, _) in enumerate(headers) if name.lower() == b"dkim-signature"]
    if not signatures:
        return DKIM_MISSING
    candidates: list[tuple[int, dict[bytes, bytes], str]] = []
    others: list[str] = []
    unreadable: str | None = None
    for index in signatures:
        try:
            tags = parse_tag_value(headers[index][1])
        except InvalidTagValueList as exc:
            unreadable = unreadable or f"a DKIM-Signature cannot be parsed: {exc!r}"
            continue
        domain = tags.get(b"d", b"").decode("utf-8", "replace")
        if aligned(domain, msg.from_domain, alignment):
            candidates.append((index, tags, domain))
        else:
            others.append(domain)
    if not candidates:
        if others:
            shown = ", ".join(f"d={d}" for d in others[:3]) + (", ..." if len(others) > 3 else "")
            return Check.fail(
                "dkim-misaligned",
                f"DKIM FAIL: no signature is aligned with From: domain {msg.from_domain} ({shown})",
            )
        return Check.fail("dkim-invalid", f"DKIM FAIL: {unreadable}")
    signed = _Signed(msg, headers, msg.raw[msg.top.body_start :])
    budget = dns_budget(deadline)
    results = []
    for index, tags, domain in candidates[:MAX_SIGNATURES_EVALUATED]:
        check = _check_one(signed, index, tags, domain, resolver, budget)
        if check.ok:
            return check
        results.append(check)
    chosen = next((c for c in results if c.tempfail), results[0])
    skipped = len(candidates) - MAX_SIGNATURES_EVALUATED
    if skipped > 0:
        return Check(
            chosen.reason,
            f"{chosen.detail} ({skipped} more aligned signatures not evaluated: "
            f"bound of {MAX_SIGNATURES_EVALUATED})",
            chosen.tempfail,
        )
    return chosen


def split_header_fields(raw: bytes, body_start: int) -> list[tuple[bytes, bytes]]:
    """The header fields of ``raw[:body_start]`` exactly as ``dkim.rfc822_parse`` makes them
    (name, value with CRLF line ends), in time linear in the block: dkimpy's own parser
    appends each folded line to a growing bytes value, which is quadratic."""
    fields: list[tuple[bytes, list[bytes]]] = []
    for line in raw[:body_start].split(b"\r\n"):
        if not line:
            break
        if line[:1] in (b" ", b"\t"):
            if not fields:
                raise _HeaderError("the header block starts with a folded line")
            fields[-1][1].append(line + b"\r\n")
            continue
        match = _HEADER_NAME.match(line)
        if match is not None:
            fields.append((match.group(1), [line[match.end() :] + b"\r\n"]))
        elif not line.startswith(b"From "):
            raise _HeaderError(f"unexpected characters in a header line: {line[:60]!r}")
    return [(name, b"".join(pieces)) for name, pieces in fields]


def _from_differs(headers: list[tuple[bytes, bytes]], msg: ParsedMessage) -> str | None:
    """DKIM splits headers its own way (bare CR is no line end to it, but is to ``email``):
    the From: it verifies must be the one From: the rest of the pipeline trusts."""
    values = [value for name, value in headers if name.lower() == b"from"]
    if len(values) != 1:
        return f"DKIM sees {len(values)} From: headers where the message parser sees one"
    if _address_in(values[0]) != msg.from_address:
        return "the From: header DKIM verifies is not the one the message parser reads"
    return None


# The same senders write again and again: their From: value is parsed once per process.
@cached_when_short(maxsize=4096, max_len=MAX_CACHED_FROM_BYTES)
def _address_in(value: bytes) -> str | None:
    """The address the message parser reads in a From: value as DKIM split it, or None."""
    seen = parse_message(b"From:" + value + b"\r\n")
    return seen.from_address if isinstance(seen, ParsedMessage) else None


def _check_one(
    signed: _Signed,
    index: int,
    tags: dict[bytes, bytes],
    domain: str,
    resolver: KeyResolver,
    budget: Deadline,
) -> Check:
    """One aligned signature, cheapest checks first; the DNS query only when all pass."""

    def fail(why: str) -> Check:
        return Check.fail("dkim-invalid", f"DKIM FAIL: d={domain} {why}")

    try:
        dkim.validate_signature_fields(tags)
    except dkim.ValidationError as exc:
        return fail(str(exc))
    except (IndexError, ValueError) as exc:  # i= equal to d=; a t= of 5,000 digits
        return fail(f"has tags dkimpy cannot validate: {exc!r}")
    algorithm = tags[b"a"]
    if algorithm == b"rsa-sha1":
        return fail("uses rsa-sha1, which is too weak")
    names = tags[b"h"]
    count = names.count(b":") + 1
    if count > MAX_SIGNED_HEADERS:
        return fail(f"h= names {count} header fields, more than the bound of {MAX_SIGNED_HEADERS}")
    include = [name.lower() for name in _H_SEPARATOR.split(names)]
    if b"from" not in include:
        return fail("does not cover the From: header")
    try:
        policy = CanonicalizationPolicy.from_c_value(tags.get(b"c", b"simple/simple"))
    except InvalidCanonicalizationPolicyError:
        return fail("has an invalid c= value")
    body = signed.canonical_body(policy)
    if b"l" in tags:
        if not tags[b"l"].isdigit():
            return fail("has an l= value that is not a number")
        length = int(tags[b"l"])
        if length < len(body):
            return fail(
                f"signs only {length} of {len(body)} body bytes (l= tag); "
                "content after that is unauthenticated"
            )
    try:
        claimed = base64.b64decode(_WHITESPACE.sub(b"", tags[b"bh"]), validate=True)
        signature = base64.b64decode(_WHITESPACE.sub(b"", tags[b"b"]), validate=True)
    except (binascii.Error, ValueError):
        return fail("has a bh= or b= value that is not base64")
    hasher = dkim.HASH_ALGORITHMS[algorithm]
    if hasher(body).digest() != claimed:
        return fail("body hash does not match: the body was altered")
    key = _public_key(tags, domain, resolver, budget)
    if isinstance(key, Check):
        return key
    if isinstance(key, rsa.RSAPublicKey) != algorithm.startswith(b"rsa-"):
        return fail(f"a={algorithm.decode()} does not fit the published key type")
    digest = _header_hash(signed, index, tags, include, policy, hasher)
    try:
        if isinstance(key, rsa.RSAPublicKey):
            # rsa-sha256: rsa-sha1 was refused above, and a= must fit the key's type.
            key.verify(signature, digest, padding.PKCS1v15(), Prehashed(hashes.SHA256()))
        else:
            key.verify(signature, digest)  # RFC 8463: Ed25519 signs the SHA-256 hash
    except InvalidSignature:
        return fail("signature does not verify")
    return Check.passed(f"from={signed.msg.from_address},DKIM passed")


def _header_hash(
    signed: _Signed,
    index: int,
    tags: dict[bytes, bytes],
    include: list[bytes],
    policy: CanonicalizationPolicy,
    hasher,
) -> bytes:
    """dkimpy's header hash (``dkim.hash_headers``) over only the fields ``h=`` selects.

    dkimpy's selection scans the whole header list once per ``h=`` name; handing it just the
    fields it would pick (the last ``n`` of each name listed ``n`` times, in message order)
    gives the same hash in linear time.
    """
    include = [*include, b"from"]  # dkimpy: any extra From: header is hashed too (bug 644046)
    wanted = Counter(include)
    seen: dict[bytes, list[int]] = defaultdict(list)
    for position, (name, _) in enumerate(signed.headers):
        lowered = name.lower()
        if lowered in wanted:
            seen[lowered].append(position)
    picked = sorted(p for name, where in seen.items() for p in where[-wanted[name] :])
    if policy.header_algorithm is Relaxed:
        policy = CanonicalizationPolicy(_RelaxedHeaders, policy.body_algorithm)
    fields = policy.canonicalize_headers([signed.headers[p] for p in picked])
    digest = hasher()
    dkim.hash_headers(digest, policy, fields, include, signed.headers[index], tags)
    return digest.digest()


class _RelaxedHeaders(Relaxed):
    """dkimpy's relaxed header canonicalisation (``Relaxed.canonicalize_headers``) with its
    two regular expressions per field replaced where they can change nothing: unfolding
    (``\\r?\\n`` removed) by two substring replacements, whitespace compression run only
    on a value with a tab or a run of blanks."""

    @staticmethod
    def canonicalize_headers(headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
        return [(name.lower().rstrip(), _relaxed_value(value)) for name, value in headers]


def _relaxed_value(value: bytes) -> bytes:
    value = value.replace(b"\r\n", b"").replace(b"\n", b"")  # unfold_header_value
    if b"\t" in value or b"  " in value:
        value = compress_whitespace(value)
    return value.strip() + b"\r\n"


def _public_key(
    tags: dict[bytes, bytes], domain: str, resolver: KeyResolver, budget: Deadline
) -> rsa.RSAPublicKey | ed25519.Ed25519PublicKey | Check:
    """The signer's key from DNS, refused on its size alone when it is hostile."""
    selector = tags[b"s"]
    name = selector + b"._domainkey." + tags[b"d"] + b"."
    shown = f"{selector.decode('utf-8', 'replace')}._domainkey.{domain}"
    try:
        record = resolver.txt(name, deadline=budget)
    except DNSTempError as exc:
        return Check.retry("dns-error", f"DKIM DNS error: {exc}")
    except DeadlineExceeded:
        return Check.retry("dns-error", f"DKIM DNS budget spent before {shown} could be looked up")
    if record is None:
        return Check.fail("dkim-invalid", f"DKIM FAIL: d={domain} no key is published at {shown}")
    key = parse_key_record(record)
    if isinstance(key, str):
        return Check.fail("dkim-invalid", f"DKIM FAIL: d={domain} key at {shown}: {key}")
    return key


@cached_when_short(maxsize=KEY_CACHE_SIZE, max_len=MAX_CACHED_RECORD_BYTES)
def parse_key_record(record: bytes) -> rsa.RSAPublicKey | ed25519.Ed25519PublicKey | str:
    """The key of a DKIM TXT record (RFC 6376 §3.6.1), or why there is none.

    An RSA key's modulus size and exponent are read from the DER lengths, before any number is
    built: no arithmetic is done on a key outside the bounds. The answer depends on the record
    alone, and the resolver hands out the same record for its TTL, so it is kept per record.
    """
    try:
        tags = parse_tag_value(record)
    except InvalidTagValueList:
        return "the record is not a tag=value list"
    if tags.get(b"v", b"DKIM1") != b"DKIM1":
        return "the record's v= is not DKIM1"
    services = {s.strip() for s in tags.get(b"s", b"*").split(b":")}
    if not services & {b"*", b"email"}:
        return "the key is not for email (s= tag)"
    if b"p" not in tags:
        return "the record has no p= tag"
    if not tags[b"p"]:
        return "the key has been revoked (empty p=)"
    try:
        data = base64.b64decode(_WHITESPACE.sub(b"", tags[b"p"]), validate=True)
    except (binascii.Error, ValueError):
        return "p= is not base64"
    kind = tags.get(b"k", b"rsa")
    if kind == b"ed25519":
        try:
            return ed25519.Ed25519PublicKey.from_public_bytes(data)
        except ValueError:
            return "p= is not an Ed25519 public key"
    if kind != b"rsa":
        return f"unknown key type k={kind.decode('utf-8', 'replace')}"
    return _rsa_key(data)


def _rsa_key(data: bytes) -> rsa.RSAPublicKey | str:
    try:
        numbers = _rsa_integers(data)
    except (ValueError, TypeError, KeyError):
        return "p= is not an RSA public key"
    modulus, exponent = (_unsigned(i) for i in numbers)
    if modulus is None or exponent is None:
        return "p= is not an RSA public key"
    bits = _bit_length(modulus)
    if bits > MAX_KEY_BITS:
        return f"RSA key of {bits} bits, more than the bound of {MAX_KEY_BITS}"
    if bits < MIN_KEY_BITS:
        return f"public key too small: {bits} bits (at least {MIN_KEY_BITS})"
    if _bit_length(exponent) > MAX_PUBLIC_EXPONENT.bit_length() - 1:
        return "RSA public exponent of 2^32 or more, beyond the bound"
    try:
        return rsa.RSAPublicNumbers(
            int.from_bytes(exponent, "big"), int.from_bytes(modulus, "big")
        ).public_key()
    except ValueError as exc:
        return f"not a usable RSA key: {exc}"


def _rsa_integers(data: bytes) -> tuple[bytes, bytes]:
    """The modulus and exponent INTEGER contents of a SubjectPublicKeyInfo or, as dkimpy also
    accepts, a bare RSAPublicKey; raises ValueError when it is neither."""
    try:
        info = asn1_keys.PublicKeyInfo.load(data, strict=True)
        if info["algorithm"]["algorithm"].native != "rsa":
            raise ValueError("not an RSA key")
        key = asn1_keys.RSAPublicKey.load(info["public_key"].contents[1:], strict=True)
    except ValueError:
        key = asn1_keys.RSAPublicKey.load(data, strict=True)
    return key["modulus"].contents, key["public_exponent"].contents


def _unsigned(contents: bytes) -> bytes | None:
    """A positive DER INTEGER's magnitude without leading zeros; None for zero or negative."""
    if not contents or contents[0] & 0x80:
        return None
    stripped = contents.lstrip(b"\x00")
    return stripped or None


def _bit_length(magnitude: bytes) -> int:
    return (len(magnitude) - 1) * 8 + magnitude[0].bit_length()
