"""DKIM: the From: address can be trusted only if its domain signed the message.

Every DKIM-Signature is checked (dkimpy's ``verify()`` looks at one), and the message passes when
one signature verifies, covers From:, covers the whole body, uses an acceptable algorithm and key,
and is aligned with the From: domain.
"""

from __future__ import annotations

import binascii
from dataclasses import dataclass

import dkim
from dkim.canonicalization import (
    CanonicalizationPolicy,
    InvalidCanonicalizationPolicyError,
)

from smime_collector.dnskeys import DNSTempError, KeyResolver
from smime_collector.message import ParsedMessage, parse_message
from smime_collector.verdict import Check

MIN_KEY_BITS = 1024


@dataclass(frozen=True)
class SignatureResult:
    domain: str
    check: Check
    aligned: bool = False


def aligned(signing_domain: str, from_domain: str, mode: str) -> bool:
    """Strict: d= equals the From: domain. Relaxed: d= may also be a parent domain of it."""
    d = signing_domain.lower().rstrip(".")
    f = from_domain.lower().rstrip(".")
    if d == f:
        return True
    # A bare top-level domain is never a sender's organisational domain.
    return mode == "relaxed" and "." in d and f.endswith("." + d)


DKIM_MISSING = Check.fail("dkim-missing", "DKIM FAIL: the message has no DKIM-Signature")


def check_dkim(msg: ParsedMessage, resolver: KeyResolver, alignment: str) -> Check:
    if "dkim-signature" not in msg.top.headers:
        return DKIM_MISSING  # spares dkimpy's parse of unsigned mail
    try:
        verifier = dkim.DKIM(msg.raw, minkey=MIN_KEY_BITS)
    except dkim.DKIMException as exc:
        return Check.fail("dkim-invalid", f"DKIM FAIL: headers cannot be parsed: {exc}")
    problem = _from_differs(verifier, msg)
    if problem:
        return Check.fail("malformed", f"DKIM FAIL: {problem}")
    # dkimpy numbers the signatures in its own header list, which is the one to count.
    count = sum(1 for name, _ in verifier.headers if name.lower() == b"dkim-signature")
    if count == 0:
        return DKIM_MISSING
    results = [_check_one(verifier, idx, msg, resolver, alignment) for idx in range(count)]
    for result in results:
        if result.check.ok:
            return result.check
    for result in results:
        if result.check.tempfail:
            return result.check
    misaligned = [r for r in results if r.check.reason == "dkim-misaligned"]
    chosen = misaligned[0] if misaligned else results[0]
    return chosen.check


def _from_differs(verifier: dkim.DKIM, msg: ParsedMessage) -> str | None:
    """dkimpy splits headers itself (bare CR is no line end to it, but is to ``email``): the
    From: it verifies must be the one From: the rest of the pipeline trusts."""
    values = [value for name, value in verifier.headers if name.lower() == b"from"]
    if len(values) != 1:
        return f"DKIM sees {len(values)} From: headers where the message parser sees one"
    seen = parse_message(b"From:" + values[0] + b"\r\n")
    if not isinstance(seen, ParsedMessage) or seen.from_address != msg.from_address:
        return "the From: header DKIM verifies is not the one the message parser reads"
    return None


def _check_one(
    verifier: dkim.DKIM,
    idx: int,
    msg: ParsedMessage,
    resolver: KeyResolver,
    alignment: str,
) -> SignatureResult:
    keys: list[bytes | None] = []

    def lookup(name: bytes, timeout: float = 5) -> bytes | None:
        keys.append(resolver.txt(name, timeout))
        return keys[-1]

    try:
        valid = verifier.verify(idx=idx, dnsfunc=lookup)
    except DNSTempError as exc:
        return SignatureResult("", Check.retry("dns-error", f"DKIM DNS error: {exc}"))
    except (dkim.DKIMException, binascii.Error, ValueError) as exc:
        # dkimpy lets a malformed bh= escape as binascii.Error: a bad signature all the same.
        return SignatureResult("", Check.fail("dkim-invalid", f"DKIM FAIL: {exc}"))
    fields = verifier.signature_fields or {}
    domain = fields.get(b"d", b"").decode("ascii", "replace")
    if not valid:
        selector = fields.get(b"s", b"").decode("ascii", "replace")
        why = (
            f"no key is published at {selector}._domainkey.{domain}"
            if keys == [None]
            else "signature does not verify"
        )
        return SignatureResult(domain, Check.fail("dkim-invalid", f"DKIM FAIL: d={domain} {why}"))
    problem = _weakness(verifier, fields)
    if problem:
        return SignatureResult(
            domain, Check.fail("dkim-invalid", f"DKIM FAIL: d={domain} {problem}")
        )
    if not aligned(domain, msg.from_domain, alignment):
        return SignatureResult(
            domain,
            Check.fail(
                "dkim-misaligned",
                f"DKIM FAIL: d={domain} is not aligned with From: domain {msg.from_domain}",
            ),
        )
    return SignatureResult(domain, Check.passed(f"from={msg.from_address},DKIM passed"), True)


def _weakness(verifier: dkim.DKIM, fields: dict[bytes, bytes]) -> str | None:
    """Why a cryptographically valid signature still does not authenticate the message."""
    if fields.get(b"a", b"").lower() == b"rsa-sha1":
        return "uses rsa-sha1, which is too weak"
    signed = [h.strip().lower() for h in fields.get(b"h", b"").split(b":")]
    if b"from" not in signed:
        return "does not cover the From: header"
    if b"l" in fields:
        try:
            policy = CanonicalizationPolicy.from_c_value(fields.get(b"c", b"simple/simple"))
        except InvalidCanonicalizationPolicyError:
            return "has an invalid c= value"
        body_length = len(policy.canonicalize_body(verifier.body))
        if int(fields[b"l"]) < body_length:
            return (
                f"signs only {int(fields[b'l'])} of {body_length} body bytes (l= tag); "
                "content after that is unauthenticated"
            )
    return None
