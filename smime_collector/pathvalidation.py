"""RFC 5280 §6 certification path validation, plus the S/MIME rules a path must meet.

The path is built and validated by ``pyhanko-certvalidator`` (asn1crypto-based, conformant on
NIST PKITS): normalised name chaining (RFC 4518), policy processing with the default inputs
(initial-policy-set anyPolicy, explicit policy not required, mapping and anyPolicy allowed),
name constraints for every GeneralName type, pathLenConstraint that self-issued certificates do
not count against, and trust anchors that are a name and a key. Revocation is not part of this
step (:mod:`smime_collector.revocation` checks the validated path), so a validated path depends
only on its certificates, the trust snapshot and the time, and is cached on exactly that.

On top, the S/MIME rules: every EKU on a CA must allow emailProtection, RSA keys on the path
are at least 2048 bits, SHA-1 signatures on certificates only with ``allow-sha1 = yes``, and an
rfc822Name constraint also binds an address the subject carries only in its emailAddress
attribute (RFC 5280 §4.2.1.10), SAN or not.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import logging
import threading
from collections.abc import Coroutine, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from pyhanko_certvalidator import find_valid_path
from pyhanko_certvalidator.context import ValidationContext
from pyhanko_certvalidator.errors import (
    DisallowedAlgorithmError,
    ExpiredError,
    NotYetValidError,
    PathBuildingError,
    ValidationError,
)
from pyhanko_certvalidator.name_trees import email_tree_contains
from pyhanko_certvalidator.path import ValidationPath
from pyhanko_certvalidator.policy_decl import (
    NO_REVOCATION,
    CertRevTrustPolicy,
    DisallowWeakAlgorithmsPolicy,
)
from pyhanko_certvalidator.registry import CertificateRegistry

from smime_collector import rawcms
from smime_collector.boundedcache import WindowCache
from smime_collector.trust import Anchors, fingerprint
from smime_collector.verdict import Check

EMAIL_EKUS = {
    ExtendedKeyUsageOID.EMAIL_PROTECTION,
    ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE,
}
MIN_RSA_BITS = 2048
#: Hashes never accepted in a certificate signature; SHA-1 joins them unless allow-sha1 = yes.
WEAK_HASHES = frozenset({"md2", "md5"})
#: Validated paths kept per process (each a few certificates); least recently used go first.
PATH_CACHE_SIZE = 1024
#: Parsed certificates kept per process; least recently used go first.
ASN1_CACHE_SIZE = 512
#: Candidate paths tried for one certificate before giving up: a message can send many
#: cross-certificates, and each candidate costs signature checks.
MAX_CANDIDATE_PATHS = 16

_DER = Encoding.DER
T = TypeVar("T")
E = TypeVar("E", bound=x509.ExtensionType)

# pyhanko logs every CRL or OCSP answer it cannot use as a WARNING with a traceback; the
# verdict's detail already says why, in one line, in the request's own log.
logging.getLogger("pyhanko_certvalidator").setLevel(logging.ERROR)
_loops = threading.local()


def run(coro: Coroutine[Any, Any, T]) -> T:
    """Run pyhanko's coroutines on one event loop per thread: a new loop per message costs
    more than the validation itself, and nothing here waits on I/O."""
    loop = getattr(_loops, "loop", None)
    if loop is None:
        loop = _loops.loop = asyncio.new_event_loop()
    return loop.run_until_complete(coro)


def asn1(cert: x509.Certificate) -> asn1_x509.Certificate:
    """The asn1crypto view of a certificate that did not come from a message (an anchor)."""
    return from_der(cert.public_bytes(_DER))


@functools.lru_cache(maxsize=ASN1_CACHE_SIZE)
def from_der(der: bytes) -> asn1_x509.Certificate:
    """The asn1crypto view of a certificate, from the exact bytes it arrived in. Parsed
    issuers recur in every message, and parsing is the costly part of asn1crypto."""
    return rawcms.exact_certificate(der)


def exact_der(cert: x509.Certificate, der_of: Mapping[x509.Certificate, bytes]) -> bytes:
    """The bytes ``cert`` arrived in when the message kept them, else its DER encoding."""
    return der_of.get(cert) or cert.public_bytes(_DER)


@dataclass(frozen=True)
class ValidPath:
    """A validated path: the certificates below the anchor (end entity first), the anchor,
    pyhanko's path object (revocation checking walks it) and the time window in which every
    certificate of the path is valid."""

    certs: tuple[x509.Certificate, ...]
    anchor: x509.Certificate | None
    pkix: ValidationPath
    valid_from: datetime
    valid_until: datetime

    # A cached path serves every message with the same certificates: what is derived from it
    # alone is derived once (the properties below), not once per message.

    def names(self) -> str:
        return self._names

    @functools.cached_property
    def _names(self) -> str:
        chain = [*self.certs, *([self.anchor] if self.anchor is not None else [])]
        return " -> ".join(common_name(cert) for cert in chain)

    @functools.cached_property
    def anchor_fingerprint(self) -> str | None:
        """The anchor's SHA-256 fingerprint (distrust-after dates are keyed by it)."""
        return None if self.anchor is None else fingerprint(self.anchor)

    @functools.cached_property
    def anchor_asn1(self) -> asn1_x509.Certificate | None:
        """The anchor as asn1crypto reads it (the issuer of the top CRL of the path)."""
        return None if self.anchor is None else asn1(self.anchor)


def common_name(cert: x509.Certificate) -> str:
    cns = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(cns[0].value) if cns else cert.subject.rfc4514_string()


def algorithm_policy(allow_sha1: bool) -> DisallowWeakAlgorithmsPolicy:
    weak = WEAK_HASHES if allow_sha1 else WEAK_HASHES | {"sha1"}
    return DisallowWeakAlgorithmsPolicy(
        weak_hash_algos=weak,
        rsa_key_size_threshold=MIN_RSA_BITS,
        dsa_key_size_threshold=MIN_RSA_BITS,
    )


_POLICIES = {flag: algorithm_policy(flag) for flag in (False, True)}


def context(
    anchors: Anchors,
    bag: Sequence[asn1_x509.Certificate],
    at: datetime,
    allow_sha1: bool,
    revinfo_policy: CertRevTrustPolicy | None = None,
    crls: Sequence[bytes] = (),
    ocsps: Sequence[bytes] = (),
) -> ValidationContext:
    """A validation context for one message: the snapshot's trust manager (built once), the
    message's certificates, the time. Revocation data only when revocation is being checked."""
    registry = CertificateRegistry.build(bag)
    return ValidationContext(
        trust_manager=anchors.trust_manager,
        certificate_registry=registry,
        moment=at,
        revinfo_policy=revinfo_policy or CertRevTrustPolicy(NO_REVOCATION),
        crls=list(crls) or None,
        ocsps=list(ocsps) or None,
        algorithm_usage_policy=_POLICIES[allow_sha1],
        allow_fetching=False,
        time_tolerance=None,
    )


#: Validated paths keyed by the certificate set, the trust snapshot and allow-sha1. The window
#: is the path's own: a hit is used only when the verification time falls inside every
#: certificate's validity, so a cached path never outlives a certificate.
CACHE: WindowCache[tuple[object, ...], ValidPath] = WindowCache(PATH_CACHE_SIZE)


def validate(
    cert: x509.Certificate,
    bag: Sequence[x509.Certificate],
    anchors: Anchors,
    at: datetime,
    allow_sha1: bool,
    der_of: dict[x509.Certificate, bytes] | None = None,
) -> ValidPath | Check:
    """Build and validate a path from ``cert`` to an anchor through ``bag``, then apply the
    S/MIME rules to it. The answer is a :class:`ValidPath` or the failing :class:`Check`."""
    der_of = der_of or {}
    leaf_der = exact_der(cert, der_of)
    others = [c for c in bag if c != cert]
    ders = [exact_der(c, der_of) for c in others]
    key = (
        anchors,
        allow_sha1,
        hashlib.sha256(leaf_der).digest(),
        frozenset(hashlib.sha256(d).digest() for d in ders),
    )
    cached = CACHE.get(key, at)
    if cached is not None:
        return cached
    result = _validate(cert, leaf_der, others, ders, anchors, at, allow_sha1)
    if isinstance(result, ValidPath):
        CACHE.put(key, result, result.valid_from, result.valid_until)
    return result


def _validate(
    cert: x509.Certificate,
    leaf_der: bytes,
    others: list[x509.Certificate],
    ders: list[bytes],
    anchors: Anchors,
    at: datetime,
    allow_sha1: bool,
) -> ValidPath | Check:
    leaf = from_der(leaf_der)
    pool = [from_der(d) for d in ders]
    ctx = context(anchors, pool, at, allow_sha1)
    try:
        path = run(_find(leaf, ctx))
    except DisallowedAlgorithmError as exc:
        return Check.fail("weak-algorithm", _sentence(exc))
    except ExpiredError as exc:
        return Check.fail("expired", _sentence(exc))
    except NotYetValidError as exc:
        return Check.fail("not-yet-valid", _sentence(exc))
    except PathBuildingError as exc:
        return Check.fail("untrusted", f"no path to a trusted root: {_sentence(exc)}")
    except (ValidationError, ValueError, TypeError, KeyError) as exc:
        # asn1crypto parses lazily: a field corrupt beyond what cryptography read fails here.
        return Check.fail("untrusted", f"no trusted chain: {_sentence(exc)}")
    by_der = dict(zip(ders, others, strict=True))
    by_der[leaf_der] = cert
    below = []
    for item in reversed(list(path.iter_certs(include_root=False))):
        found = by_der.get(item.dump())
        below.append(found if found is not None else x509.load_der_x509_certificate(item.dump()))
    anchor_cert = None
    authority = path.trust_anchor.authority
    certificate = getattr(authority, "certificate", None)
    if certificate is not None:
        anchor_cert = x509.load_der_x509_certificate(certificate.dump())
    chain = [*below, *([anchor_cert] if anchor_cert is not None else [])]
    check = smime_rules(below, anchor_cert, at)
    if not check.ok:
        return check
    return ValidPath(
        tuple(below),
        anchor_cert,
        path,
        max(c.not_valid_before_utc for c in chain),
        min(c.not_valid_after_utc for c in chain),
    )


async def _find(leaf: asn1_x509.Certificate, ctx: ValidationContext) -> ValidationPath:
    paths = ctx.path_builder.async_build_paths_lazy(leaf)
    return await find_valid_path(leaf, _bounded(paths, MAX_CANDIDATE_PATHS), ctx)


class _bounded:
    """At most ``limit`` candidate paths from pyhanko's lazy path builder."""

    def __init__(self, inner: Any, limit: int) -> None:
        self.inner = inner
        self.left = limit

    def __aiter__(self) -> _bounded:
        return self

    async def __anext__(self) -> ValidationPath:
        if self.left <= 0:
            raise StopAsyncIteration
        self.left -= 1
        return await self.inner.__anext__()

    async def cancel(self) -> None:
        await self.inner.cancel()


def smime_rules(
    below: Sequence[x509.Certificate], anchor: x509.Certificate | None, at: datetime
) -> Check:
    """What S/MIME asks of a path beyond RFC 5280."""
    for ca in below[1:]:
        eku = extension(ca, x509.ExtendedKeyUsage)
        if eku is not None and not EMAIL_EKUS.intersection(eku):
            return Check.fail(
                "wrong-key-usage",
                f"issuer {common_name(ca)}'s extended key usage excludes emailProtection",
            )
    if anchor is not None:
        # RFC 5280 leaves the anchor's validity to the relying party; every mail client
        # (NSS, OpenSSL) refuses an expired root, and so does a collector for them.
        if at > anchor.not_valid_after_utc:
            return Check.fail(
                "expired",
                f"root {common_name(anchor)} expired "
                f"{anchor.not_valid_after_utc:%Y-%m-%d %H:%M:%S}",
            )
        if at < anchor.not_valid_before_utc:
            return Check.fail(
                "not-yet-valid",
                f"root {common_name(anchor)} is valid from "
                f"{anchor.not_valid_before_utc:%Y-%m-%d %H:%M:%S}",
            )
    return _subject_emails_constrained(below)


def _subject_emails_constrained(below: Sequence[x509.Certificate]) -> Check:
    """RFC 5280 §4.2.1.10: rfc822Name constraints bind the subject's emailAddress too.

    pyhanko applies them to the subject's emailAddress only when the certificate has no SAN;
    a SAN without an rfc822Name would otherwise let a sub-CA limited to one domain issue for
    any address through the subject.
    """
    leaf = below[0]
    addresses = [str(a.value) for a in leaf.subject.get_attributes_for_oid(NameOID.EMAIL_ADDRESS)]
    if not addresses:
        return Check.passed()
    for ca in below[1:]:
        constraints = extension(ca, x509.NameConstraints)
        if constraints is None:
            continue
        permitted = [
            n.value
            for n in (constraints.permitted_subtrees or ())
            if isinstance(n, x509.RFC822Name)
        ]
        excluded = [
            n.value for n in (constraints.excluded_subtrees or ()) if isinstance(n, x509.RFC822Name)
        ]
        for address in addresses:
            if permitted and not any(email_tree_contains(p, address) for p in permitted):
                return Check.fail(
                    "untrusted",
                    f"{address} is outside the addresses issuer {common_name(ca)} may certify",
                )
            if any(email_tree_contains(e, address) for e in excluded):
                return Check.fail(
                    "untrusted",
                    f"{address} is excluded from the addresses issuer {common_name(ca)} "
                    "may certify",
                )
    return Check.passed()


def extension(cert: x509.Certificate, kind: type[E]) -> E | None:
    """The value of ``cert``'s extension of type ``kind``, or ``None`` when it has none."""
    try:
        return cert.extensions.get_extension_for_class(kind).value
    except x509.ExtensionNotFound:
        return None


def _sentence(exc: BaseException) -> str:
    text = str(exc.args[0]) if exc.args else str(exc)
    return text.removeprefix("The path could not be validated because ")
