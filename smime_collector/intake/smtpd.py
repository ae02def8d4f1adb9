"""SMTP and LMTP (RFC 2033) for a Postfix or Exim relay: judge after DATA, answer with the verdict.

Built on aiosmtpd, which does the protocol (EHLO/LHLO, 8BITMIME, SMTPUTF8, SIZE, STARTTLS,
dot-unstuffing) and hands :meth:`CollectorHandler.handle_DATA` the message bytes exactly as
sent. The verdict becomes the reply in one place, :func:`reply`:

- ``stored`` / ``unchanged``: 250;
- ``rejected``: ``550 5.7.1 <reason> <explanation>``, so the sender's own MTA tells them why
  and this service never sends a bounce (backscatter) to a possibly forged address;
- ``tempfail``: ``451 4.3.0``, and the relay retries;
- over ``smtp-max-bytes``: 552 (aiosmtpd, which also advertises the limit as SIZE).

LMTP answers once per accepted recipient; every recipient gets the one message's verdict.

Judging blocks (DNS, disk), so it runs on one worker thread beside the event loop, which keeps
serving other connections; one thread, because the store's per-address lock is between
processes. On SIGTERM the server stops listening, closes idle sessions, lets every judgement
under way finish and send its reply, then exits (:meth:`Server.stop`).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import socket
import ssl
from datetime import UTC, datetime
from typing import Any

from aiosmtpd.lmtp import LMTP
from aiosmtpd.smtp import SMTP, Envelope, Session

from smime_collector.config import Settings
from smime_collector.deadline import Deadline
from smime_collector.delivery import Delivery
from smime_collector.delivery import Envelope as DeliveryEnvelope
from smime_collector.pipeline import Collector
from smime_collector.verdict import Outcome, Verdict

#: The budget of one judgement: far below Postfix's 600 s wait for the answer to DATA.
JUDGE_SECONDS = 300.0
#: Seconds a session may sit between commands (and from DATA to its reply) before it is closed.
SESSION_TIMEOUT_SECONDS = 600.0
#: Seconds SIGTERM waits for judgements under way, then for their replies to be sent.
DRAIN_SECONDS = JUDGE_SECONDS + 30.0
#: Seconds SIGTERM then waits for the closed connections to flush their last reply.
CLOSE_SECONDS = 5.0

log = logging.getLogger(__name__)


def reply(verdict: Verdict) -> str:
    """The one place a verdict becomes an SMTP reply line."""
    if verdict.outcome is Outcome.STORED:
        return "250 2.0.0 OK: certificate stored"
    if verdict.outcome is Outcome.UNCHANGED:
        return "250 2.0.0 OK: certificate already stored"
    if verdict.outcome is Outcome.REJECTED:
        return f"550 5.7.1 {verdict.reason} {verdict.explanation}"
    return f"451 4.3.0 {verdict.reason} Temporary failure; please retry"


def recipient_accepted(address: str, accepted: tuple[str, ...]) -> bool:
    """``smtp-recipients``: addresses or domains (lower case); empty accepts every recipient."""
    if not accepted:
        return True
    address = address.lower()
    domain = address.rpartition("@")[2]
    return address in accepted or domain in accepted


class CollectorHandler:
    """aiosmtpd's handler: RCPT checks ``smtp-recipients``, DATA is judged by the pipeline."""

    def __init__(self, collector: Collector, settings: Settings) -> None:
        self.collector = collector
        self.settings = settings
        self.lmtp = settings.smtp_protocol == "lmtp"
        self.intake = settings.smtp_protocol
        self.judging: set[SMTP] = set()
        self._executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="judge")
        self._idle = asyncio.Event()
        self._idle.set()

    async def handle_RCPT(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        if not recipient_accepted(address, self.settings.smtp_recipients):
            return f"550 5.1.1 <{address}>: recipient not accepted here"
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        raw = envelope.original_content or b""
        delivery = Delivery(
            raw,
            self.intake,
            datetime.now(UTC),
            DeliveryEnvelope(envelope.mail_from, tuple(envelope.rcpt_tos)),
        )
        peer = session.peer
        self.judging.add(server)
        self._idle.clear()
        try:
            loop = asyncio.get_running_loop()
            verdict = await loop.run_in_executor(self._executor, self._judge, delivery, peer)
        finally:
            self.judging.discard(server)
            if not self.judging:
                self._idle.set()
        line = reply(verdict)
        if self.lmtp:  # one answer per accepted recipient (RFC 2033 section 4.2)
            return "\r\n".join([line] * len(envelope.rcpt_tos))
        return line

    def _judge(self, delivery: Delivery, peer: Any) -> Verdict:
        sink = self.collector.sink
        with sink.context() if sink is not None else contextlib.nullcontext():
            log.info(
                "Message from %s,protocol=%s,mail_from=%s,rcpt_to=%s,bytes=%d",
                peer[0] if isinstance(peer, tuple) else peer,
                self.intake,
                delivery.envelope.sender,
                ",".join(delivery.envelope.recipients),
                len(delivery.raw),
            )
            return self.collector.judge(delivery, Deadline.after(JUDGE_SECONDS))

    async def idle(self) -> None:
        """Return when no judgement is under way."""
        await self._idle.wait()

    def close(self) -> None:
        self._executor.shutdown(wait=True)


class Server:
    """The listening socket and its sessions, with a stop that lets judgements finish."""

    def __init__(self, collector: Collector, settings: Settings) -> None:
        self.settings = settings
        self.handler = CollectorHandler(collector, settings)
        self.tls = tls_context(settings)
        self.hostname = socket.getfqdn()  # once: it may cost a DNS lookup
        self.sessions: set[SMTP] = set()
        self._server: asyncio.AbstractServer | None = None
        self._no_sessions = asyncio.Event()
        self._no_sessions.set()

    def _session(self) -> SMTP:
        protocol = _LMTPSession if self.handler.lmtp else _SMTPSession
        session = protocol(
            self.handler,
            data_size_limit=self.settings.smtp_max_bytes,
            enable_SMTPUTF8=True,
            decode_data=False,
            hostname=self.hostname,
            tls_context=self.tls,
            timeout=SESSION_TIMEOUT_SECONDS,
        )
        session.on_lost = self._lost
        self.sessions.add(session)
        self._no_sessions.clear()
        return session

    def _lost(self, session: SMTP) -> None:
        self.sessions.discard(session)
        if not self.sessions:
            self._no_sessions.set()

    async def start(self) -> tuple[str, int]:
        """Listen on ``smtp-listen``; returns the address really bound (port 0 picks one)."""
        host, port = self.settings.smtp_listen
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(self._session, host, port)
        bound = self._server.sockets[0].getsockname()
        log.info(
            "listening on %s:%d (%s, SIZE %d, STARTTLS %s)",
            bound[0],
            bound[1],
            self.settings.smtp_protocol.upper(),
            self.settings.smtp_max_bytes,
            "on" if self.tls else "off",
        )
        return bound[0], bound[1]

    async def stop(self) -> None:
        """Stop listening, close idle sessions, let judgements under way finish and reply."""
        if self._server is not None:
            self._server.close()
        for session in list(self.sessions):
            if session not in self.handler.judging:
                session.close_transport()
        log.info(
            "no longer listening; waiting for %d judgement(s) under way",
            len(self.handler.judging),
        )
        try:
            await asyncio.wait_for(self.handler.idle(), DRAIN_SECONDS)
        except TimeoutError:
            log.warning("stopping with a judgement still under way")
        for session in list(self.sessions):
            session.close_transport()
        try:
            await asyncio.wait_for(self._no_sessions.wait(), CLOSE_SECONDS)
        except TimeoutError:
            log.warning("stopping with %d connections not yet closed", len(self.sessions))
        self.handler.close()


class _SessionMixin:
    """Tells the server when a connection has gone, and closes one on request."""

    on_lost: Any = None
    transport: Any

    def connection_lost(self, error: Exception | None) -> None:
        super().connection_lost(error)  # type: ignore[misc]
        if self.on_lost is not None:
            self.on_lost(self)

    def close_transport(self) -> None:
        """Close after whatever is buffered (a reply just written) has been sent."""
        if self.transport is not None:
            self.transport.close()


class _SMTPSession(_SessionMixin, SMTP):
    pass


class _LMTPSession(_SessionMixin, LMTP):
    pass


def tls_context(settings: Settings) -> ssl.SSLContext | None:
    """STARTTLS when ``smtp-tls-cert`` and ``smtp-tls-key`` are set (config checks both)."""
    if settings.smtp_tls_cert is None or settings.smtp_tls_key is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(settings.smtp_tls_cert, settings.smtp_tls_key)
    return context
