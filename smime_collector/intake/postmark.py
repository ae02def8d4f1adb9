"""Postmark inbound webhook (``POST /postmark``): the message in the JSON field ``RawEmail``.

Postmark posts every inbound message as JSON to the stream's webhook URL; ``RawEmail`` is only
there when the stream's "Include raw email content" setting is on. Postmark cannot sign the post,
so the URL carries HTTP Basic credentials (``https://user:password@host/postmark``), checked
against ``postmark-basic-auth``.

JSON is text: ``RawEmail`` carries a message as UTF-8, so a message with 8-bit bytes that are not
UTF-8 cannot arrive byte-exact through this door (its signatures then fail and say so).

Postmark retries any answer but 200 (and 403) about ten times over ten hours.
"""

from __future__ import annotations

import logging
from typing import Any

from flask import Blueprint, Flask, Response, jsonify, request

from smime_collector.config import Settings
from smime_collector.deadline import Deadline
from smime_collector.delivery import Envelope
from smime_collector.intake.common import (
    bad_request,
    door,
    judge,
    provider_answer,
    read_body,
)
from smime_collector.intake.jsonbody import BadJSON, json_object, string_field, text, utf8_bytes
from smime_collector.verdict import Verdict

INTAKE = "postmark"
PATH = "/postmark"
RAW_MISSING = (
    'RawEmail is missing: turn on "Include raw email content" in the Postmark inbound '
    "stream's webhook settings"
)

log = logging.getLogger(__name__)
blueprint = Blueprint(INTAKE, __name__)


def enabled(settings: Settings) -> bool:
    return bool(settings.postmark_basic_auth)


def install(app: Flask, settings: Settings) -> None:
    app.register_blueprint(blueprint)


def answer(verdict: Verdict) -> tuple[Response, int]:
    """The one place a verdict becomes Postmark's answer: 503 makes Postmark retry."""
    return provider_answer(verdict)


@blueprint.post(PATH)
@door(log, basic=lambda settings: settings.postmark_basic_auth)
def postmark(deadline: Deadline) -> tuple[Response, int]:
    if request.mimetype != "application/json":
        return jsonify(message="Content-Type must be application/json"), 400
    try:
        inbound = json_object(read_body(), "Postmark's inbound JSON")
        if "RawEmail" not in inbound:
            raise BadJSON(RAW_MISSING)
        raw = utf8_bytes(string_field(inbound, "RawEmail"), "RawEmail")
    except BadJSON as exc:
        return bad_request(log, str(exc))
    verdict = judge(raw, INTAKE, _envelope(inbound), deadline)
    return answer(verdict)


def _envelope(inbound: dict[str, Any]) -> Envelope:
    """Postmark's own fields, for the log only."""
    recipient = text(inbound.get("OriginalRecipient")) or text(inbound.get("To"))
    return Envelope(
        text(inbound.get("From")), (recipient,) if recipient else (), text(inbound.get("MessageID"))
    )
