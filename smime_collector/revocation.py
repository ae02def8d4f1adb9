"""Is any certificate of a validated path revoked? CRLs and OCSP (RFC 5280 §6.3, RFC 6960).

Sources, in order, for every certificate below the anchor:

1. CRLs carried in the message's CMS ``crls`` field, and the local ``revocation-crls`` files;
2. the certificate's CRL distribution points over HTTP (the S/MIME Baseline Requirements make
   them mandatory);
3. OCSP from its authorityInfoAccess.

Each CRL and OCSP response is verified by ``pyhanko-certvalidator``: signature, issuer (and the
issuer's own path), scope (distribution points, indirect CRLs, reasons, delta CRLs) and
freshness (thisUpdate, nextUpdate). A CRL supplied for a certificate without a distribution
point still counts: it is checked directly, not through pyhanko's "if declared" gate.

Fetching is driven by mail anyone can send, so it happens only for a path already validated
to a trusted anchor, through :mod:`smime_collector.guardedfetch`, at most
:data:`MAX_FETCHES_PER_MESSAGE` times per message, and fetched data is kept in a bounded
per-process cache until its nextUpdate; concurrent requests for the same URL share one fetch.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from pathlib import Path

from asn1crypto import algos, crl, ocsp, pem
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from pyhanko_certvalidator._state import ValProcState
from pyhanko_certvalidator.errors import (
    CRLNoMatchesError,
    CRLValidationIndeterminateError,
    OCSPNoMatchesError,
    OCSPValidationIndeterminateError,
    RevokedError,
)
from pyhanko_certvalidator.policy_decl import REQUIRE_REVINFO, CertRevTrustPolicy
from pyhanko_certvalidator.revinfo.validate_crl import verify_crl
from pyhanko_certvalidator.revinfo.validate_ocsp import verify_ocsp_response
from pyhanko_certvalidator.util import ConsList

from smime_collector import metrics, pathvalidation
from smime_collector.boundedcache import WindowCache
from smime_collector.deadline import Deadline
from smime_collector.guardedfetch import FetchError, FetchPolicy, fetch
from smime_collector.pathvalidation import ValidPath, common_name
from smime_collector.trust import Anchors, fingerprint
from smime_collector.verdict import Check

log = logging.getLogger(__name__)

#: Fetches one message may cause, over every certificate of its path and both protocols.
MAX_FETCHES_PER_MESSAGE = 6
#: Distribution points / OCSP URLs tried per certificate; a certificate can list many.
MAX_URLS_PER_CERTIFICATE = 3
#: Fetched CRLs and OCSP responses kept per process, by count and by total size.
CACHE_ENTRIES = 256
CACHE_BYTES = 64 * 1024 * 1024
#: Seconds a failed fetch is remembered, so that a dead or refused server costs one timeout
#: per URL and period, not one per message.
FAILURE_TTL_TRANSIENT = 30.0
FAILURE_TTL_PERMANENT = 300.0
#: Verified "not revoked" answers kept per process (see ``Revocation.verified``).
VERIFIED_ENTRIES = 4096
#: CRL files read from ``revocation-crls``; a folder with more is a configuration error.
MAX_LOCAL_CRLS = 1000

_REQUIRE = CertRevTrustPolicy(REQUIRE_REVINFO)


class Status(StrEnum):
    GOOD = "good"
    REVOKED = "revoked"
    UNAVAILABLE = "unavailable"  # a retry could cure it: timeout, 5xx, a CRL past nextUpdate
    UNKNOWN = "unknown"  # no usable source, or only data that fails verification


@dataclass(frozen=True)
class Finding:
    """The revocation status of a whole path, with a sentence saying why."""

    status: Status
    detail: str


@dataclass(frozen=True)
class RevocationSettings:
    mode: str = "soft"
    fetch: bool = True
    crl_paths: tuple[Path, ...] = ()
    allow_private: bool = False
    timeout: float = 5.0
    max_bytes: int = 20 * 1024 * 1024
    nameservers: tuple[tuple[str, int], ...] = ()


class Digested(bytes):
    """Revocation data that carries its SHA-256, computed once where the bytes enter (a
    message, a ``revocation-crls`` file, a fetch): the verified-answer cache is keyed by the
    digests of every CRL held, for every certificate of every message."""

    sha256: bytes

    def __new__(cls, data: bytes) -> Digested:
        if isinstance(data, Digested):
            return data
        self = super().__new__(cls, data)
        self.sha256 = hashlib.sha256(data).digest()
        return self


class RevocationConfigError(Exception):
    """A ``revocation-crls`` file cannot be read; raised at start-up."""


def load_local_crls(paths: Sequence[Path]) -> list[bytes]:
    """The CRLs named by ``revocation-crls`` (files, or folders of ``.crl``/``.pem`` files)."""
    found: list[bytes] = []
    for path in paths:
        files = sorted(p for p in path.iterdir() if p.is_file()) if path.is_dir() else [path]
        for file in files:
            if len(found) >= MAX_LOCAL_CRLS:
                raise RevocationConfigError(f"more than {MAX_LOCAL_CRLS} CRLs in revocation-crls")
            try:
                data = file.read_bytes()
            except OSError as exc:
                raise RevocationConfigError(f"cannot read revocation-crls {file}: {exc}") from None
            found.extend(_crl_ders(data, file))
    return found


def _crl_ders(data: bytes, source: Path) -> list[bytes]:
    try:
        if pem.detect(data):
            ders = [der for kind, _, der in pem.unarmor(data, multiple=True) if "CRL" in kind]
        else:
            ders = [data]
        for der in ders:
            crl.CertificateList.load(der)["tbs_cert_list"]["this_update"].native  # noqa: B018
    except (ValueError, TypeError, KeyError) as exc:
        raise RevocationConfigError(f"revocation-crls {source} is not a CRL: {exc}") from None
    return ders


class LocalCRLs:
    """The ``revocation-crls`` files, read at start-up and again when one of them (or a
    folder's listing) changes, so a cron job that downloads fresh CRLs needs no restart.
    A folder caught half-written keeps the CRLs read before."""

    def __init__(self, paths: Sequence[Path], check_interval: float = 5.0) -> None:
        self.paths = tuple(paths)
        self.check_interval = check_interval
        self._lock = threading.Lock()
        self._stamp = self._stat()
        # A bad file at start-up is a configuration error.
        self._crls = _digested(load_local_crls(self.paths))
        self._checked = time.monotonic()

    def _stat(self) -> tuple[tuple[str, int, int], ...]:
        stamps = []
        for path in self.paths:
            files = sorted(path.iterdir()) if path.is_dir() else [path]
            for file in files:
                try:
                    st = file.stat()
                except OSError:
                    continue
                stamps.append((str(file), st.st_mtime_ns, st.st_size))
        return tuple(stamps)

    def crls(self) -> list[Digested]:
        if not self.paths or time.monotonic() - self._checked < self.check_interval:
            return self._crls
        with self._lock:
            self._checked = time.monotonic()
            try:
                stamp = self._stat()
                if stamp != self._stamp:
                    self._crls = _digested(load_local_crls(self.paths))
                    self._stamp = stamp
            except (OSError, RevocationConfigError) as exc:
                log.warning("| revocation-crls not reloaded, keeping the last good ones: %s", exc)
        return self._crls


def _digested(ders: Iterable[bytes]) -> list[Digested]:
    return [Digested(der) for der in ders]


def _crl_window(crls: list[bytes], serial: int) -> tuple[datetime, datetime] | None:
    """[latest thisUpdate, earliest nextUpdate] of ``crls``, or None when a CRL lacks a
    nextUpdate, cannot be read, or lists ``serial``."""
    starts, ends = [], []
    for data in crls:
        try:
            tbs = crl.CertificateList.load(data)["tbs_cert_list"]
            starts.append(tbs["this_update"].native)
            ends.append(tbs["next_update"].native)
            if any(
                entry["user_certificate"].native == serial for entry in tbs["revoked_certificates"]
            ):
                return None
        except (ValueError, TypeError, KeyError):
            return None
    if not ends or any(end is None for end in ends):
        return None
    return max(starts), min(ends)


# -- the cache -------------------------------------------------------------------------------


@dataclass
class _Flight:
    done: threading.Event = field(default_factory=threading.Event)
    data: Digested | None = None
    error: FetchError | None = None


class FetchCache:
    """Fetched revocation data until its nextUpdate; one fetch per key at a time.

    A waiter for a fetch already in flight shares its outcome, data or error, instead of
    sending the same request again.
    """

    def __init__(
        self, entries: int = CACHE_ENTRIES, max_bytes: int = CACHE_BYTES, clock=time.time
    ) -> None:
        self.entries = entries
        self.max_bytes = max_bytes
        self.clock = clock
        self._items: OrderedDict[str, tuple[Digested, float]] = OrderedDict()
        self._failures: OrderedDict[str, tuple[FetchError, float]] = OrderedDict()
        self._size = 0
        self._inflight: dict[str, _Flight] = {}
        self._lock = threading.Lock()

    def peek(self, key: str) -> Digested | None:
        with self._lock:
            return self._fresh(key)

    def _fresh(self, key: str) -> Digested | None:
        item = self._items.get(key)
        if item is None:
            return None
        data, until = item
        if self.clock() >= until:
            self._drop(key)
            return None
        self._items.move_to_end(key)
        return data

    def _drop(self, key: str) -> None:
        data, _ = self._items.pop(key)
        self._size -= len(data)

    def get(
        self,
        key: str,
        load: Callable[[], bytes],
        expires: Callable[[bytes], float | None],
        wait: float,
    ) -> Digested:
        """Cached data for ``key``, else ``load()`` once for all concurrent callers."""
        with self._lock:
            data = self._fresh(key)
            if data is not None:
                return data
            failed = self._failures.get(key)
            if failed is not None and self.clock() < failed[1]:
                raise failed[0]
            flight = self._inflight.get(key)
            leader = flight is None
            if leader:
                flight = self._inflight[key] = _Flight()
        assert flight is not None
        if not leader:
            if not flight.done.wait(wait):
                raise FetchError("timed out waiting for the same fetch by another request", True)
            if flight.error is not None:
                raise flight.error
            assert flight.data is not None
            return flight.data
        try:
            flight.data = Digested(load())
            until = expires(flight.data)
            if until is not None and until > self.clock():
                self._put(key, flight.data, until)
            return flight.data
        except FetchError as exc:
            flight.error = exc
            ttl = FAILURE_TTL_TRANSIENT if exc.transient else FAILURE_TTL_PERMANENT
            with self._lock:
                self._failures[key] = (exc, self.clock() + ttl)
                while len(self._failures) > self.entries:
                    self._failures.popitem(last=False)
            raise
        finally:
            with self._lock:
                self._inflight.pop(key, None)
            flight.done.set()

    def _put(self, key: str, data: Digested, until: float) -> None:
        if len(data) > self.max_bytes:
            return
        with self._lock:
            if key in self._items:
                self._drop(key)
            self._items[key] = (data, until)
            self._size += len(data)
            while len(self._items) > self.entries or self._size > self.max_bytes:
                self._drop(next(iter(self._items)))


def _crl_expiry(data: bytes) -> float | None:
    try:
        following = crl.CertificateList.load(data)["tbs_cert_list"]["next_update"].native
    except (ValueError, TypeError, KeyError):
        return None
    return following.timestamp() if following else None


def _ocsp_expiry(data: bytes) -> float | None:
    try:
        response = ocsp.OCSPResponse.load(data)
        basic = response["response_bytes"]["response"].parsed
        times = [r["next_update"].native for r in basic["tbs_response_data"]["responses"]]
    except (ValueError, TypeError, KeyError, AttributeError):
        return None
    if not times or any(t is None for t in times):
        return None
    return min(times).timestamp()


# -- the check -------------------------------------------------------------------------------


@dataclass
class _Budget:
    """What one message may still spend on fetching."""

    deadline: Deadline
    fetches_left: int = MAX_FETCHES_PER_MESSAGE


@dataclass
class _Evidence:
    """What was learned about one certificate, source by source."""

    good: str | None = None
    revoked: str | None = None
    transient: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)

    def settled(self) -> bool:
        return self.good is not None or self.revoked is not None


class Revocation:
    """The process's revocation checker: local CRLs loaded once, the fetch cache, settings."""

    def __init__(self, settings: RevocationSettings, cache: FetchCache | None = None) -> None:
        self.settings = settings
        self.local = LocalCRLs(settings.crl_paths)
        self.cache = cache or FetchCache()
        # "Not revoked" answers already verified, so that a CRL served from the fetch cache is
        # not verified again for every message (its signature, its issuer's path). Keyed by
        # the certificate, its issuer, the exact set of CRLs that were available, the trust
        # snapshot and allow-sha1; used only between the latest thisUpdate and the earliest
        # nextUpdate of those CRLs, and only when none of them lists the certificate's serial
        # (a listed serial may be revoked from a date on, so its answer depends on the time).
        self.verified: WindowCache[tuple[object, ...], str] = WindowCache(VERIFIED_ENTRIES)
        self.policy = FetchPolicy(
            settings.timeout, settings.max_bytes, settings.allow_private, settings.nameservers
        )

    def status(
        self,
        path: ValidPath,
        bag: Sequence[bytes],
        crls: Sequence[bytes],
        anchors: Anchors,
        at: datetime,
        allow_sha1: bool,
        deadline: Deadline,
    ) -> Finding:
        """The status of every certificate below the anchor, combined: revoked if any is,
        unavailable if any could not be checked now, unknown if any has no usable source."""
        fetching = self.settings.fetch
        budget = _Budget(deadline)
        pool = [pathvalidation.from_der(der) for der in bag]
        if path.anchor_asn1 is not None:  # the CRL of the certificate just below it is the anchor's
            pool.append(path.anchor_asn1)
        held = [*_digested(crls), *self.local.crls()]
        ocsps: list[bytes] = []
        findings: list[tuple[x509.Certificate, Status, str]] = []
        issued = [*path.certs[1:], *([path.anchor] if path.anchor is not None else [])]
        # From the anchor down: a CRL's issuer is checked with the revocation data already
        # gathered for the certificates above it.
        pairs = list(zip(path.certs, issued, strict=True))
        for cert, issuer in reversed(pairs):
            evidence = self._check_one(
                cert, issuer, path, pool, held, ocsps, anchors, at, allow_sha1, fetching, budget
            )
            findings.insert(0, (cert, *_conclude(evidence)))
        # A certificate's CRL is unusable when its issuer's own status is stale, so a failure a
        # retry could cure anywhere on the path counts before "unknown".
        for status in (Status.REVOKED, Status.UNAVAILABLE, Status.UNKNOWN):
            for cert, found, detail in findings:
                if found is status:
                    return Finding(status, f"{common_name(cert)}: {detail}")
        return Finding(Status.GOOD, "; ".join(f"{common_name(c)}: {d}" for c, _, d in findings))

    def _check_one(
        self,
        cert: x509.Certificate,
        issuer: x509.Certificate,
        path: ValidPath,
        pool: list[asn1_x509.Certificate],
        held: list[Digested],
        ocsps: list[bytes],
        anchors: Anchors,
        at: datetime,
        allow_sha1: bool,
        fetching: bool,
        budget: _Budget,
    ) -> _Evidence:
        evidence = _Evidence()
        crl_urls = _crl_urls(cert)
        for url in crl_urls:
            cached = self.cache.peek(url)
            if cached is not None and cached not in held:
                held.append(cached)
        if not held and not (fetching and (crl_urls or _ocsp_urls(cert))):
            return evidence  # no source at all: nothing to parse or verify
        target = _pkix_cert(path, cert)
        place = _place(path, cert)
        # Without its own state pyhanko describes every certificate as the path's last one
        # (CRLs) or as its trust anchor (OCSP): tell it where this one sits.
        state = lambda: ValProcState(  # noqa: E731 - a fresh state per verification
            cert_path_stack=ConsList.sing(path.pkix), init_index=place
        )
        role = (
            "end-entity certificate"
            if place == path.pkix.pkix_len
            else "intermediate CA certificate"
        )
        who = (anchors, allow_sha1, fingerprint(cert), fingerprint(issuer))

        def judge_crls() -> None:
            key = (*who, frozenset(c.sha256 for c in held))
            known = self.verified.get(key, at)
            if known is not None:
                evidence.good = known
                return
            ctx = pathvalidation.context(
                anchors, pool, at, allow_sha1, _REQUIRE, crls=held, ocsps=ocsps
            )
            _judge(
                lambda: verify_crl(target, path.pkix, ctx, proc_state=state()),
                evidence,
                "CRL",
                role,
            )
            if evidence.good is not None:
                window = _crl_window(held, cert.serial_number)
                if window is not None:
                    self.verified.put(key, evidence.good, *window)

        if held:
            judge_crls()
        if evidence.settled() or not fetching:
            return evidence
        fresh = False
        for url in crl_urls:
            data = self._fetch(url, budget, evidence, expires=_crl_expiry)
            if data is not None and data not in held:
                if _is_crl(data):
                    held.append(data)
                    fresh = True
                else:
                    evidence.failed.append(f"{url} did not answer with a CRL")
        if fresh:
            judge_crls()
        if evidence.settled():
            return evidence
        for url in _ocsp_urls(cert):
            request = _ocsp_request(target, pathvalidation.asn1(issuer))
            key = f"{url} {hashlib.sha256(request).hexdigest()}"
            data = self._fetch(
                url, budget, evidence, expires=_ocsp_expiry, body=request, cache_key=key
            )
            if data is None:
                continue
            problem = _ocsp_problem(data)
            if problem is not None:
                (evidence.transient if problem[1] else evidence.failed).append(
                    f"{url}: {problem[0]}"
                )
                continue
            ocsps.append(data)
            ctx = pathvalidation.context(
                anchors, pool, at, allow_sha1, _REQUIRE, crls=held, ocsps=ocsps
            )
            _judge(
                lambda ctx=ctx: verify_ocsp_response(target, path.pkix, ctx, proc_state=state()),
                evidence,
                "OCSP",
                role,
            )
            if evidence.settled():
                break
        return evidence

    def _fetch(
        self,
        url: str,
        budget: _Budget,
        evidence: _Evidence,
        *,
        expires: Callable[[bytes], float | None],
        body: bytes | None = None,
        cache_key: str | None = None,
    ) -> Digested | None:
        key = cache_key or url
        cached = self.cache.peek(key)
        if cached is not None:
            return cached
        if budget.fetches_left <= 0:
            evidence.failed.append(f"{url} not fetched: {MAX_FETCHES_PER_MESSAGE} fetches spent")
            return None
        budget.fetches_left -= 1
        content_type = "application/ocsp-request" if body is not None else None

        def load() -> bytes:
            log.info("| revocation fetch %s", url)
            return fetch(url, self.policy, budget.deadline, body=body, content_type=content_type)

        try:
            wait = budget.deadline.timeout(self.policy.timeout)
        except Exception:  # noqa: BLE001 - DeadlineExceeded: nothing left to wait with
            evidence.transient.append(f"{url} not fetched: the request's time budget is spent")
            return None
        try:
            return self.cache.get(key, load, expires, wait)
        except FetchError as exc:
            (evidence.transient if exc.transient else evidence.failed).append(f"{url}: {exc}")
            return None

    def check(
        self,
        path: ValidPath,
        bag: Sequence[bytes],
        crls: Sequence[bytes],
        anchors: Anchors,
        at: datetime,
        allow_sha1: bool,
        deadline: Deadline,
    ) -> Check:
        """The verdict the configured mode gives: ``soft`` passes an unestablished status
        with a warning, ``hard`` fails it, ``off`` checks nothing."""
        if self.settings.mode == "off":
            return Check.passed("revocation checking is off")
        finding = self.status(path, bag, crls, anchors, at, allow_sha1, deadline)
        if finding.status is Status.GOOD:
            return Check.passed(f"not revoked ({finding.detail})")
        if finding.status is Status.REVOKED:
            return Check.fail("revoked", finding.detail)
        if self.settings.mode == "soft":
            metrics.REVOCATION_UNKNOWN.inc()
            log.warning(
                "| revocation status not established, stored anyway (revocation = soft): %s",
                finding.detail,
            )
            return Check.passed(f"status not established (soft): {finding.detail}")
        if finding.status is Status.UNAVAILABLE:
            return Check.retry("revocation-unavailable", finding.detail)
        return Check.fail("revocation-unknown", finding.detail)


def _judge(run: Callable[[], object], evidence: _Evidence, kind: str, role: str) -> None:
    try:
        pathvalidation.run(run())  # type: ignore[arg-type]
    except RevokedError as exc:
        evidence.revoked = _revoked(kind, role, exc)
    except (CRLNoMatchesError, OCSPNoMatchesError):
        evidence.failed.append(f"no {kind} covers it")
    except (CRLValidationIndeterminateError, OCSPValidationIndeterminateError) as exc:
        reasons = "; ".join(str(f[0] if isinstance(f, tuple) else f) for f in exc.failures)
        reasons = reasons or exc.msg
        if exc.suspect_stale is not None:
            evidence.transient.append(f"{kind} is stale (past its nextUpdate): {reasons}")
        else:
            evidence.failed.append(f"{kind} unusable: {reasons}")
    except (ValueError, TypeError, KeyError) as exc:
        evidence.failed.append(f"{kind} cannot be parsed: {exc}")
    else:
        evidence.good = f"{kind} says good"


def _conclude(evidence: _Evidence) -> tuple[Status, str]:
    if evidence.revoked is not None:
        return Status.REVOKED, evidence.revoked
    if evidence.good is not None:
        return Status.GOOD, evidence.good
    if evidence.transient:
        return Status.UNAVAILABLE, "; ".join(evidence.transient + evidence.failed)
    return Status.UNKNOWN, "; ".join(evidence.failed) or "no CRL or OCSP source"


def _revoked(kind: str, role: str, exc: RevokedError) -> str:
    """Our own sentence, not pyhanko's: it shows in the log, on /ui and in recheck's JSON, and
    must say which certificate of the path was revoked (the caller prefixes its name)."""
    when = exc.revocation_dt.strftime("%H:%M:%S on %Y-%m-%d")
    return f"{kind} says the {role} was revoked at {when}, due to {exc.reason.human_friendly}"


def _place(path: ValidPath, cert: x509.Certificate) -> int:
    """``cert``'s index in the path as RFC 5280 counts it: 1 just below the anchor, the path's
    length for the end-entity certificate."""
    wanted = (cert.serial_number, cert.issuer.public_bytes())
    for index, item in enumerate(path.pkix.iter_certs(include_root=False), start=1):
        if (item.serial_number, item.issuer.dump()) == wanted:
            return index
    return path.pkix.pkix_len


def _pkix_cert(path: ValidPath, cert: x509.Certificate) -> asn1_x509.Certificate:
    """pyhanko's own object for ``cert``, so that its path lookups match by identity."""
    wanted = cert.serial_number
    for item in path.pkix.iter_certs(include_root=False):
        if item.serial_number == wanted and item.issuer.dump() == cert.issuer.public_bytes():
            return item
    return pathvalidation.asn1(cert)


def _http(urls: list[str]) -> list[str]:
    return [u for u in urls if u.lower().startswith(("http://", "https://"))][
        :MAX_URLS_PER_CERTIFICATE
    ]


def _crl_urls(cert: x509.Certificate) -> list[str]:
    points = pathvalidation.extension(cert, x509.CRLDistributionPoints)
    if points is None:
        return []
    urls = [
        name.value
        for point in points
        for name in (point.full_name or ())
        if isinstance(name, x509.UniformResourceIdentifier)
    ]
    return _http(urls)


def _ocsp_urls(cert: x509.Certificate) -> list[str]:
    aia = pathvalidation.extension(cert, x509.AuthorityInformationAccess)
    if aia is None:
        return []
    urls = [
        d.access_location.value
        for d in aia
        if d.access_method == x509.oid.AuthorityInformationAccessOID.OCSP
        and isinstance(d.access_location, x509.UniformResourceIdentifier)
    ]
    return _http(urls)


def _ocsp_request(cert: asn1_x509.Certificate, issuer: asn1_x509.Certificate) -> bytes:
    """An RFC 6960 request for one certificate; CertID with SHA-1, as every responder reads."""
    cert_id = ocsp.CertId(
        {
            "hash_algorithm": algos.DigestAlgorithm({"algorithm": "sha1"}),
            "issuer_name_hash": hashlib.sha1(issuer.subject.dump()).digest(),
            "issuer_key_hash": issuer.public_key.sha1,
            "serial_number": cert.serial_number,
        }
    )
    request = ocsp.OCSPRequest({"tbs_request": {"request_list": [{"req_cert": cert_id}]}})
    return request.dump()


def _ocsp_problem(data: bytes) -> tuple[str, bool] | None:
    """Why an OCSP answer is no response at all (and whether a retry could help), or None."""
    try:
        status = ocsp.OCSPResponse.load(data)["response_status"].native
    except (ValueError, TypeError, KeyError) as exc:
        return f"not an OCSP response: {exc}", False
    if status == "successful":
        return None
    return f"responder answered {status}", status in ("try_later", "internal_error")


def _is_crl(data: bytes) -> bool:
    """A cheap look at the header fields; pyhanko reads the rest when it verifies it."""
    try:
        crl.CertificateList.load(data)["tbs_cert_list"]["this_update"].native  # noqa: B018
    except (ValueError, TypeError, KeyError):
        return False
    return True
