"""The only place that orders the stages: a :class:`Delivery` in, one :class:`Verdict` out.

parse → safe address → find the S/MIME layer → DKIM → CMS signature → certificate policy →
store. Each stage answers with a :class:`Check`; the first failure decides the verdict.
"""

from __future__ import annotations

import contextlib
import functools
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime

from cryptography import x509
from cryptography.x509.oid import NameOID

from smime_collector import certpolicy, logsetup, metrics
from smime_collector.config import Settings
from smime_collector.deadline import Deadline
from smime_collector.delivery import Delivery
from smime_collector.dkimcheck import check_dkim
from smime_collector.dnskeys import KeyResolver
from smime_collector.message import MalformedMessage, ParsedMessage, parse_message
from smime_collector.smime import (
    WEAK_DIGESTS,
    Signer,
    find_signature,
    verify_signed_data,
)
from smime_collector.stages import run_stage
from smime_collector.store import CertStore, open_store
from smime_collector.trust import TrustAnchors, fingerprint
from smime_collector.verdict import Check, Outcome, Reason, Verdict

log = logging.getLogger(__name__)
MAX_LOGGED_MESSAGE_ID = 200


@dataclass
class Collector:
    """Per-process state built once from the settings: anchors, DNS resolver, store, and the
    entry point's log sink (``None``: lines go wherever the caller's logging sends them)."""

    settings: Settings
    anchors: TrustAnchors
    resolver: KeyResolver
    store: CertStore
    sink: logsetup.LogSink | None = None

    @classmethod
    def build(cls, settings: Settings, sink: logsetup.LogSink | None = None) -> Collector:
        store = open_store(settings)
        store.prepare()
        return cls(
            settings,
            TrustAnchors(list(settings.trusted_certs)),
            KeyResolver(list(settings.dns_nameservers), settings.dns_timeout),
            store,
            sink,
        )

    def read_smime_email(
        self, raw: bytes, received_at: datetime | None = None, intake: str = "cli"
    ) -> Verdict:
        """Judge one raw message (the seed's entry point); see :meth:`judge`."""
        if received_at is None:
            return self.judge(Delivery(raw, intake))
        return self.judge(Delivery(raw, intake, received_at))

    def judge(self, delivery: Delivery, deadline: Deadline | None = None) -> Verdict:
        """Judge one message and store its sender's certificate when every check passes.

        ``deadline`` is the request's: DNS (and revocation) waits never outlast it. An
        unexpected error in a stage that reads the message rejects it (see
        :mod:`smime_collector.stages`); one outside those stages costs this message a
        ``tempfail`` (the sender retries), never the worker.
        """
        with self._scope():
            try:
                verdict, message_id = self._judge(delivery, deadline or Deadline.never())
            except Exception:
                log.exception("| unexpected error while judging this message")
                verdict = Verdict(
                    Outcome.TEMPFAIL, Reason.INTERNAL_ERROR, detail="see traceback in log"
                )
                message_id = None
            metrics.record_verdict(verdict, delivery.intake)
            log.log(
                _level(verdict),
                "| outcome=%s,reason=%s,email=%s,message_id=%s,intake=%s",
                verdict.outcome.value,
                verdict.reason,
                verdict.email,
                message_id,
                delivery.intake,
                extra={
                    "outcome": verdict.outcome.value,
                    "reason": str(verdict.reason),
                    "email": verdict.email,
                    "message_id": message_id,
                    "intake": delivery.intake,
                    "location": verdict.location,
                },
            )
            return verdict

    @contextlib.contextmanager
    def _scope(self) -> Iterator[None]:
        """Lines of this message go to this collector's sink, inside the caller's request
        scope when there is one, else in a scope of their own."""
        if self.sink is None or logsetup.current_request_id() != logsetup.NO_REQUEST:
            yield
            return
        with self.sink.context():
            yield

    def _judge(self, delivery: Delivery, deadline: Deadline) -> tuple[Verdict, str | None]:
        with metrics.stage("parse"):
            parsed = run_stage("parse", log, parse_message, delivery.raw)
        if isinstance(parsed, Check):
            return self._reject(parsed, None), None
        message_id = _message_id(parsed)
        return self._judge_parsed(parsed, delivery, deadline), message_id

    def _judge_parsed(
        self, parsed: ParsedMessage, delivery: Delivery, deadline: Deadline
    ) -> Verdict:
        info = log.info
        address = parsed.from_address
        problem = self.store.unsafe(address)
        if problem:
            return self._reject(Check.fail(Reason.UNSAFE_ADDRESS, problem), None)
        logged = run_stage("parse", log, self._log_parts, parsed)
        if isinstance(logged, Check):
            return self._reject(logged, address)
        part = run_stage("parse", log, find_signature, parsed.top)
        if isinstance(part, Check):
            return self._reject(part, address)
        info("| filename=%s,bytes=%d", part.filename, len(part.cms_der))
        if self.settings.dkim == "require":
            with metrics.stage("dkim"):
                dkim = run_stage("dkim", log, self._check_dkim, parsed, deadline)
            if not dkim.ok:
                info("| from=%s,%s", address, dkim.detail)
                return self._reject(dkim, address)
            info("| %s", dkim.detail)
        with metrics.stage("cms"):
            signed = run_stage("cms", log, verify_signed_data, part)
        if isinstance(signed, Check):
            return self._reject(signed, address)
        logged = run_stage("cms", log, log_certificates, log, signed.certificates)
        if isinstance(logged, Check):
            return self._reject(logged, address)
        at = self.settings.verify_time or delivery.received_at
        failures: list[Check] = []
        for signer in signed.signers:
            with metrics.stage("chain"):
                # Revocation fetches belong here and draw their waits from ``deadline``.
                chosen = run_stage(
                    "chain", log, self._choose_certificate, signer, signed.certificates, parsed, at
                )
            if isinstance(chosen, Check):
                failures.append(chosen)
                continue
            with metrics.stage("store"):
                return self._store(address, chosen)
        return self._reject((failures or signed.failures)[0], address)

    def _check_dkim(self, parsed: ParsedMessage, deadline: Deadline | None = None) -> Check:
        stats = self.resolver.stats
        lookups, hits = stats.lookups, stats.cache_hits
        check = check_dkim(parsed, self.resolver, self.settings.dkim_alignment, deadline)
        metrics.DNS_LOOKUPS.inc(stats.lookups - lookups)
        metrics.DNS_CACHE_HITS.inc(stats.cache_hits - hits)
        return check

    def _choose_certificate(
        self,
        signer: Signer,
        bag: list[x509.Certificate],
        msg: ParsedMessage,
        at: datetime,
    ) -> x509.Certificate | Check:
        """The signer's certificate if it can receive encrypted mail, else its preferred twin."""
        info = log.info
        info(
            "| signer serial=%x,digest=%s,signature=%s,signature verified",
            signer.cert.serial_number,
            signer.digest,
            signer.signature_algorithm,
        )
        if signer.digest in WEAK_DIGESTS and not self.settings.allow_sha1:
            check = Check.fail(
                "weak-algorithm",
                f"signature digest {signer.digest} is too weak (allow-sha1 = no)",
            )
            info("| check digest: FAIL weak-algorithm,%s", check.detail)
            return check
        anchors = self.anchors.current()
        candidate = certpolicy.Candidate(signer.cert, bag, anchors, at, msg.from_address)
        check = certpolicy.judge(candidate, certpolicy.SIGNER_RULES, info)
        if not check.ok:
            return check
        usable = certpolicy.check_encryption_usage(candidate)
        if usable.ok:
            info("| check encryption_usage: ok,%s", usable.detail)
            return signer.cert
        preferred = signer.encryption_preference
        if preferred is None or preferred == signer.cert:
            info("| check encryption_usage: FAIL wrong-key-usage,%s", usable.detail)
            return usable
        info("| signer certificate is signing-only; checking its encryption key preference")
        twin = certpolicy.Candidate(preferred, bag, anchors, at, msg.from_address)
        check = certpolicy.judge(twin, certpolicy.ENCRYPTION_RULES, info)
        return preferred if check.ok else check

    def _store(self, address: str, cert: x509.Certificate) -> Verdict:
        result = self.store.save(address, cert)
        email = address.lower()
        if not result.check.ok:
            return self._reject(result.check, email)
        where = result.location
        if result.changed:
            log.info("| written %s,bytes=%d,ok=True", where, result.size)
            return Verdict(Outcome.STORED, Reason.OK, email, where, result.check.detail)
        log.info("| %s already holds this certificate", where)
        return Verdict(Outcome.UNCHANGED, Reason.OK, email, where, result.check.detail)

    def _reject(self, check: Check, email: str | None) -> Verdict:
        log.info("| %s: %s", check.reason, check.detail)
        return Verdict.from_check(check, email.lower() if email else None)

    def _log_parts(self, msg: ParsedMessage) -> Check | None:
        try:
            for entity in msg.top.walk():
                log.info(
                    "| content-type=%s,content-description=%s",
                    entity.content_type,
                    _clip(entity.headers.get("content-description")),
                )
        except MalformedMessage as exc:
            return Check.fail("malformed", str(exc))
        return None


def _level(verdict: Verdict) -> int:
    """The outcome line's level: a retry is worth a look, an unexpected error always is."""
    if verdict.reason == Reason.INTERNAL_ERROR:
        return logging.ERROR
    if verdict.outcome is Outcome.TEMPFAIL:
        return logging.WARNING
    return logging.INFO


def _message_id(parsed: ParsedMessage) -> str | None:
    value = parsed.top.headers.get("message-id")
    if value is None:
        return None
    text = str(value).strip()
    return text[:MAX_LOGGED_MESSAGE_ID] if text else None


def _clip(value: object, limit: int = 200) -> object:
    """Header values are the sender's: log a bounded prefix of them."""
    if value is None:
        return None
    text = str(value)
    return text if len(text) <= limit else text[:limit] + "..."


def log_certificates(log: logging.Logger, certs: list[x509.Certificate]) -> None:
    for cert in certs:
        log_certificate(log, cert)


def log_certificate(log: logging.Logger, cert: x509.Certificate) -> None:
    """One line per certificate in the seed's format, then key and fingerprint details."""
    if log.isEnabledFor(logging.INFO):
        for line in describe_certificate(cert):
            log.info("%s", line)


@functools.lru_cache(maxsize=1024)
def describe_certificate(cert: x509.Certificate) -> tuple[str, str]:
    """The log lines for a certificate; issuers recur in every message, so they are kept."""
    emails = [str(a.value) for a in cert.subject.get_attributes_for_oid(NameOID.EMAIL_ADDRESS)]
    issuer = {attr.oid._name: str(attr.value) for attr in cert.issuer}
    digest = cert.signature_hash_algorithm.name if cert.signature_hash_algorithm else None
    seed_line = (
        f"| Certificate: subject email_address={emails},"
        f"not_valid_before={cert.not_valid_before_utc:%Y-%m-%d %H:%M:%S},"
        f"not_valid_after={cert.not_valid_after_utc:%Y-%m-%d %H:%M:%S},"
        f"hash_algorithm={digest},key_size={certpolicy.key_bits(cert)} bits, issuer={issuer}"
    )
    detail_line = (
        f"|   key_type={certpolicy.key_type(cert)},emails={certpolicy.emails_of(cert)},"
        f"serial={cert.serial_number:x},sha256={fingerprint(cert)}"
    )
    return seed_line, detail_line
