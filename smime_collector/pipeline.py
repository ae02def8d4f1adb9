"""The only place that orders the stages: a :class:`Delivery` in, one :class:`Verdict` out.

parse → safe address → find the S/MIME layer → DKIM → CMS signature → certificate policy
(path, revocation, address) → store. Each stage answers with a :class:`Check`; the first
failure decides the verdict.
"""

from __future__ import annotations

import contextlib
import functools
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime

from cryptography import x509
from cryptography.x509.oid import NameOID

from smime_collector import certpolicy, logsetup, metrics, pathvalidation
from smime_collector.config import ConfigError, Settings
from smime_collector.deadline import Deadline
from smime_collector.delivery import Delivery
from smime_collector.dkimcheck import check_dkim
from smime_collector.dnskeys import KeyResolver
from smime_collector.journal import JournalEntry
from smime_collector.message import MalformedMessage, ParsedMessage, parse_message
from smime_collector.revocation import (
    Revocation,
    RevocationConfigError,
    RevocationSettings,
    Status,
)
from smime_collector.smime import (
    WEAK_DIGESTS,
    SignedData,
    Signer,
    find_signature,
    verify_signed_data,
)
from smime_collector.stages import run_stage
from smime_collector.store import CertStore, StoreUnavailable, open_store
from smime_collector.trust import CORRUPT_CERTIFICATE, TrustAnchors, fingerprint
from smime_collector.verdict import Check, Outcome, Reason, Verdict

log = logging.getLogger(__name__)
MAX_LOGGED_MESSAGE_ID = 200


@dataclass
class Collector:
    """Per-process state built once from the settings: anchors, DNS resolver, store, the
    entry point's log sink (``None``: lines go wherever the caller's logging sends them) and
    the revocation checker (its fetch cache lives as long as the process)."""

    settings: Settings
    anchors: TrustAnchors
    resolver: KeyResolver
    store: CertStore
    sink: logsetup.LogSink | None = None
    revocation: Revocation | None = None

    def __post_init__(self) -> None:
        if self.revocation is None:
            self.revocation = revocation_checker(self.settings)

    @classmethod
    def build(cls, settings: Settings, sink: logsetup.LogSink | None = None) -> Collector:
        store = open_store(settings)
        try:
            store.prepare()
        except StoreUnavailable as exc:
            # A worker (re)started during a database outage still serves: its messages are
            # tempfail until the database returns, and /healthz says so.
            log.warning("certificate store unavailable at start: %s", exc)
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
            self._journal(verdict, delivery, message_id)
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

    def _journal(self, verdict: Verdict, delivery: Delivery, message_id: str | None) -> None:
        """Keep the verdict for the operator page. The journal serves people asking why; a
        failure to write it must not change what the sender is told, so it is only logged."""
        entry = JournalEntry.from_verdict(
            verdict,
            datetime.now(UTC),
            delivery.intake,
            message_id,
            logsetup.current_request_id(),
            delivery.envelope.sender,
        )
        try:
            self.store.record(entry)
        except (OSError, StoreUnavailable) as exc:
            log.warning("| verdict journal not written: %s", exc)

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
                # Revocation fetches happen here and draw their waits from ``deadline``.
                chosen = run_stage(
                    "chain", log, self._choose_certificate, signer, signed, parsed, at, deadline
                )
            if isinstance(chosen, Check):
                failures.append(chosen)
                continue
            with metrics.stage("store"):
                return self._store(address, chosen, signed, at, deadline)
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
        signed: SignedData,
        msg: ParsedMessage,
        at: datetime,
        deadline: Deadline,
    ) -> certpolicy.Candidate | Check:
        """The signer's certificate if it can receive encrypted mail, else its preferred twin,
        as the candidate that passed (with its validated path)."""
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

        def candidate_for(cert: x509.Certificate) -> certpolicy.Candidate:
            return certpolicy.Candidate(
                cert,
                signed.certificates,
                anchors,
                at,
                msg.from_address,
                allow_sha1=self.settings.allow_sha1,
                der_of=signed.der_of,
                crls=signed.crls,
                revocation=self.revocation,
                deadline=deadline,
            )

        candidate = candidate_for(signer.cert)
        check = certpolicy.judge(candidate, certpolicy.SIGNER_RULES, info)
        if not check.ok:
            return check
        usable = certpolicy.check_encryption_usage(candidate)
        if usable.ok:
            info("| check encryption_usage: ok,%s", usable.detail)
            return candidate
        preferred = signer.encryption_preference
        if preferred is None or preferred == signer.cert:
            info("| check encryption_usage: FAIL wrong-key-usage,%s", usable.detail)
            return usable
        info("| signer certificate is signing-only; checking its encryption key preference")
        twin = candidate_for(preferred)
        check = certpolicy.judge(twin, certpolicy.ENCRYPTION_RULES, info)
        return twin if check.ok else check

    def _store(
        self,
        address: str,
        chosen: certpolicy.Candidate,
        signed: SignedData,
        at: datetime,
        deadline: Deadline,
    ) -> Verdict:
        cert = chosen.cert
        der = chosen.der(cert)
        chain = [chosen.der(c) for c in chosen.path.certs[1:]] if chosen.path else []
        result = self.store.save(address, cert, der=der, chain=chain)
        if result.check.reason == Reason.OLDER_THAN_STORED:
            try:
                revoked = self._stored_revoked(address, signed, at, deadline)
                if revoked is not None:
                    self.store.mark_revoked(address, *revoked)
                    result = self.store.save(
                        address, cert, current_revoked=True, der=der, chain=chain
                    )
            except StoreUnavailable as exc:  # the database went away between the two steps
                return self._reject(Check.retry(Reason.STORE_ERROR, str(exc)), address)
        email = address.lower()
        if not result.check.ok:
            return self._reject(result.check, email)
        where = result.location
        if result.changed:
            log.info("| written %s,bytes=%d,ok=True", where, result.size)
            return Verdict(Outcome.STORED, Reason.OK, email, where, result.check.detail)
        log.info("| %s already holds this certificate", where)
        return Verdict(Outcome.UNCHANGED, Reason.OK, email, where, result.check.detail)

    def _stored_revoked(
        self, address: str, signed: SignedData, at: datetime, deadline: Deadline
    ) -> tuple[x509.Certificate, str] | None:
        """A stored certificate later found revoked never blocks its owner's new one: before
        ``older-than-stored`` is answered, the stored one is checked (its issuers from the
        store and the message). Returns it and why when it is revoked."""
        stored = self.store.get(address)
        if stored is None or self.settings.revocation == "off" or self.revocation is None:
            return None
        der_of = dict(signed.der_of)
        stored_der = self.store.get_der(address)
        if stored_der is not None:
            der_of[stored] = stored_der
        for der in self.store.chain(address):
            issuer = _load(der)
            if issuer is not None:
                der_of[issuer] = der
        bag = list(dict.fromkeys([*signed.certificates, *der_of]))
        anchors = self.anchors.current()
        allow_sha1 = self.settings.allow_sha1
        found = pathvalidation.validate(stored, bag, anchors, at, allow_sha1, der_of)
        if isinstance(found, Check):
            return None
        ders = [pathvalidation.exact_der(c, der_of) for c in bag]
        finding = self.revocation.status(
            found, ders, signed.crls, anchors, at, allow_sha1, deadline
        )
        if finding.status is not Status.REVOKED:
            return None
        log.info("| the stored certificate is revoked (%s); it no longer blocks", finding.detail)
        return stored, finding.detail

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


def _load(der: bytes) -> x509.Certificate | None:
    try:
        return x509.load_der_x509_certificate(der)
    except CORRUPT_CERTIFICATE:
        return None


def revocation_checker(settings: Settings) -> Revocation:
    """The process's revocation checker; an unreadable ``revocation-crls`` is a config error."""
    try:
        return Revocation(
            RevocationSettings(
                mode=settings.revocation,
                fetch=settings.revocation_fetch,
                crl_paths=settings.revocation_crls,
                allow_private=settings.revocation_allow_private,
                timeout=settings.revocation_timeout,
                max_bytes=settings.revocation_max_bytes,
                nameservers=settings.dns_nameservers,
            )
        )
    except (RevocationConfigError, OSError) as exc:
        raise ConfigError(f"{settings.source}: {exc}") from None


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
