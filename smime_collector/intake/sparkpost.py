"""SparkPost Inbound Relay webhook (``POST /``): the seed's door, unchanged on the wire.

SparkPost POSTs a JSON array of relay events, each carrying one message in
``msys.relay_message.content.email_rfc822`` (base64 when ``email_rfc822_is_base64``). It retries
a batch that does not get a 200, so the whole batch answers 503 when any message is
``tempfail``; reprocessing the others is harmless (``unchanged``). The HTTP body never discloses
verdicts, as in the seed.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

from flask import Blueprint, Response, jsonify, request

from smime_collector.delivery import Delivery, Envelope
from smime_collector.intake.common import bad_request, read_body, request_deadline, state, token_ok
from smime_collector.intake.jsonbody import BadJSON, base64_bytes, json_value, text
from smime_collector.verdict import Outcome, Verdict

INTAKE = "sparkpost"
TOKEN_HEADER = "X-MessageSystems-Webhook-Token"
#: Relay events one request may carry; a larger batch is refused whole (413).
MAX_BATCH_ITEMS = 100

log = logging.getLogger(__name__)
blueprint = Blueprint(INTAKE, __name__)


class BadRequest(Exception):
    """The relay request is not what SparkPost sends; the message names the field."""


class BatchTooLarge(Exception):
    """More relay events than :data:`MAX_BATCH_ITEMS` in one request."""


@blueprint.post("/")
def relay() -> tuple[Response, int]:
    settings, collector = state().settings, state().collector
    log.info("Request from %s,scheme=%s,path=%s", request.remote_addr, request.scheme, request.path)
    if request.mimetype != "application/json":
        return jsonify(message="Unknown Content-Type in request headers"), 400
    if not token_ok(request.headers.get(TOKEN_HEADER), settings.webhook_token):
        log.warning("| invalid %s", TOKEN_HEADER)
        return jsonify(message=f"Invalid {TOKEN_HEADER} in request headers"), 401
    deadline = request_deadline()
    body = read_body()
    log.info("| len(headers)=%d,len(body)=%d", len(request.headers), len(body))
    try:
        events = parse_batch(body)
        del body  # each message is held once from here on, as bytes
    except BadRequest as exc:
        return bad_request(log, str(exc))
    except BatchTooLarge as exc:
        log.info("| batch too large: %s", exc)
        return jsonify(message=str(exc)), 413
    received = datetime.now(UTC)
    verdicts: list[Verdict] = []
    for envelope, raw in events:
        if deadline.expired:
            log.warning(
                "| request deadline reached: %d of %d messages not judged; the relay retries",
                len(events) - len(verdicts),
                len(events),
            )
            break
        log.info(
            "| msg_from=%s,rcpt_to=%s,len(email_rfc822)=%d",
            envelope.sender,
            ",".join(envelope.recipients),
            len(raw),
        )
        verdicts.append(collector.judge(Delivery(raw, INTAKE, received, envelope), deadline))
        if verdicts[-1].outcome is Outcome.TEMPFAIL:
            if len(verdicts) < len(events):
                log.info(
                    "| %d more messages not judged: the relay retries the whole batch",
                    len(events) - len(verdicts),
                )
            break
    return answer(verdicts, len(events))


def answer(verdicts: list[Verdict], count: int) -> tuple[Response, int]:
    """The one place verdicts become SparkPost's answer: 503 makes the relay retry the batch.

    After the first ``tempfail`` the rest is not judged (the retry judges it), and neither is
    what the request's deadline left: fewer verdicts than ``count`` events is a 503 too.
    """
    if len(verdicts) < count or any(v.outcome is Outcome.TEMPFAIL for v in verdicts):
        return jsonify(message="Temporary failure; please retry", count=count), 503
    return jsonify(message="OK", count=count), 200


def parse_batch(body: bytes) -> list[tuple[Envelope, bytes]]:
    """Validate the whole relay batch before judging any message."""
    try:
        body_text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadRequest(f"request body is not valid UTF-8 (byte {exc.start})") from None
    try:
        batch = json_value(body_text, "request body")
    except BadJSON as exc:
        raise BadRequest(str(exc)) from None
    if not isinstance(batch, list):
        raise BadRequest("request body must be a JSON array of relay events")
    if len(batch) > MAX_BATCH_ITEMS:
        raise BatchTooLarge(
            f"the batch holds {len(batch)} relay events, more than the bound of "
            f"{MAX_BATCH_ITEMS}; send at most {MAX_BATCH_ITEMS} per request"
        )
    return [_relay_content(item, f"[{i}]") for i, item in enumerate(batch)]


def _field(obj: Any, key: str, where: str, kind: type) -> Any:
    if not isinstance(obj, dict) or key not in obj:
        raise BadRequest(f"{where}.{key} is missing")
    value = obj[key]
    if not isinstance(value, kind) or (kind is not bool and isinstance(value, bool)):
        raise BadRequest(f"{where}.{key} must be {_kind_name(kind)}")
    return value


def _kind_name(kind: type) -> str:
    return {dict: "an object", str: "a string", bool: "a boolean"}[kind]


def _envelope(relay: dict[str, Any]) -> Envelope:
    """The relay's envelope fields, for logs only: they never decide a verdict."""
    recipient = text(relay.get("rcpt_to"))
    return Envelope(text(relay.get("msg_from")), () if recipient is None else (recipient,))


def _relay_content(item: Any, where: str) -> tuple[Envelope, bytes]:
    """The message bytes and the envelope (not the JSON content)."""
    msys = _field(item, "msys", where, dict)
    relay = _field(msys, "relay_message", f"{where}.msys", dict)
    content = _field(relay, "content", f"{where}.msys.relay_message", dict)
    where = f"{where}.msys.relay_message.content"
    email = _field(content, "email_rfc822", where, str)
    is_base64 = content.get("email_rfc822_is_base64", False)
    if not isinstance(is_base64, bool):
        raise BadRequest(f"{where}.email_rfc822_is_base64 must be a boolean")
    if not is_base64:
        try:
            return _envelope(relay), email.encode("utf-8", "surrogateescape")
        except UnicodeEncodeError as exc:  # a \ud800-style escape no bytes can stand for
            raise BadRequest(
                f"{where}.email_rfc822 holds a lone surrogate at character {exc.start}"
            ) from None
    try:
        return _envelope(relay), base64_bytes(email, f"{where}.email_rfc822")
    except BadJSON as exc:
        raise BadRequest(str(exc)) from None
