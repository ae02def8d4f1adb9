"""The universal door (``POST /raw``): the body is the message itself.

For anything that can make an HTTP request with the message as it arrived: a Cloudflare Email
Worker (``contrib/cloudflare-email-worker.js``), a script behind another MTA, a test. The body
is ``Content-Type: message/rfc822``, authenticated with ``Authorization: Bearer <raw-token>``.
Unlike the providers' doors, the answer tells the verdict, as JSON ``{"outcome", "reason",
"email"}``: the caller holds the token, and may want to tell the sender why.
"""

from __future__ import annotations

import logging

from flask import Blueprint, Flask, Response, jsonify, request

from smime_collector.config import Settings
from smime_collector.deadline import Deadline
from smime_collector.delivery import Envelope
from smime_collector.intake.common import (
    door,
    judge,
    read_body,
)
from smime_collector.verdict import Outcome, Verdict

INTAKE = "raw"
PATH = "/raw"
CONTENT_TYPE = "message/rfc822"

log = logging.getLogger(__name__)
blueprint = Blueprint(INTAKE, __name__)


def enabled(settings: Settings) -> bool:
    return bool(settings.raw_token)


def install(app: Flask, settings: Settings) -> None:
    app.register_blueprint(blueprint)


def answer(verdict: Verdict) -> tuple[Response, int]:
    """The one place a verdict becomes this door's answer: the verdict itself, 503 to retry."""
    status = 503 if verdict.outcome is Outcome.TEMPFAIL else 200
    return jsonify(
        outcome=verdict.outcome.value, reason=str(verdict.reason), email=verdict.email
    ), status


@blueprint.post(PATH)
@door(log, bearer=lambda settings: settings.raw_token)
def raw_message(deadline: Deadline) -> tuple[Response, int]:
    if request.mimetype != CONTENT_TYPE:
        return jsonify(message=f"Content-Type must be {CONTENT_TYPE}"), 400
    raw = read_body()
    if not raw:
        return jsonify(message="request body is empty: it must be the message itself"), 400
    return answer(judge(raw, INTAKE, Envelope(), deadline))
