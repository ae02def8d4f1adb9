"""SendGrid Inbound Parse (``POST /sendgrid``) with "POST the raw, full MIME message" on.

SendGrid then posts ``multipart/form-data`` whose field ``email`` is the whole message as it
arrived, beside its own parsed fields (``envelope``, ``from``, ``to``, ``charsets`` ...), which
are used for the log only. SendGrid does not sign the post: the Inbound Parse URL carries HTTP
Basic credentials (``https://user:password@host/sendgrid``), checked against
``sendgrid-basic-auth``.

SendGrid retries an answer of 5xx for up to three days; any 2xx ends it.
"""

from __future__ import annotations

import json
import logging

from flask import Blueprint, Flask, Response

from smime_collector.config import Settings
from smime_collector.deadline import Deadline
from smime_collector.delivery import Envelope
from smime_collector.intake.common import (
    bad_request,
    door,
    judge,
    provider_answer,
)
from smime_collector.intake.forms import MULTIPART, BadForm, read_form
from smime_collector.intake.jsonbody import text, texts
from smime_collector.verdict import Verdict

INTAKE = "sendgrid"
PATH = "/sendgrid"
RAW_MISSING = (
    'email is missing: turn on "POST the raw, full MIME message" in SendGrid\'s Inbound Parse '
    "settings"
)

log = logging.getLogger(__name__)
blueprint = Blueprint(INTAKE, __name__)


def enabled(settings: Settings) -> bool:
    return bool(settings.sendgrid_basic_auth)


def install(app: Flask, settings: Settings) -> None:
    app.register_blueprint(blueprint)


def answer(verdict: Verdict) -> tuple[Response, int]:
    """The one place a verdict becomes SendGrid's answer: 503 makes SendGrid retry."""
    return provider_answer(verdict)


@blueprint.post(PATH)
@door(log, basic=lambda settings: settings.sendgrid_basic_auth)
def sendgrid(deadline: Deadline) -> tuple[Response, int]:
    try:
        form = read_form((MULTIPART,))
    except BadForm as exc:
        return bad_request(log, str(exc))
    raw = form.get("email")
    if raw is None:
        return bad_request(log, RAW_MISSING)
    envelope = _envelope(form.get("envelope"))
    del form  # the message is held once from here on
    return answer(judge(raw, INTAKE, envelope, deadline))


def _envelope(value: bytes | None) -> Envelope:
    """SendGrid's ``envelope`` JSON (``{"to": [...], "from": "..."}``), for the log only."""
    try:
        parsed = json.loads(value or b"{}")
    except ValueError:
        return Envelope()
    if not isinstance(parsed, dict):
        return Envelope()
    return Envelope(text(parsed.get("from")), texts(parsed.get("to")))
