"""Mailgun inbound route (``POST /mailgun/mime``): ``forward()`` to a URL ending in ``mime``.

Mailgun then posts the whole message, untouched, in the form field ``body-mime`` (as
``multipart/form-data`` or ``application/x-www-form-urlencoded``), with ``timestamp``, ``token``
and ``signature``: hex HMAC-SHA256 of ``timestamp + token`` under the account's HTTP webhook
signing key. The signature covers neither the body nor the URL, so a captured request could be
replayed: a timestamp more than :data:`MAX_CLOCK_SKEW_SECONDS` from now is refused, and a token
that already got a final answer gets that answer again without being judged
(:mod:`smime_collector.intake.answers`).

Mailgun retries any answer but 200 and 406 for 8 hours; 503 (tempfail) is what makes it retry.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import time

from flask import Blueprint, Flask, Response, jsonify

from smime_collector.config import Settings
from smime_collector.deadline import Deadline
from smime_collector.delivery import Envelope
from smime_collector.intake import answers
from smime_collector.intake.common import bad_request, door, judge, provider_answer, state
from smime_collector.intake.forms import BadForm, read_form, text_field
from smime_collector.verdict import Verdict

INTAKE = "mailgun"
PATH = "/mailgun/mime"
#: How far a request's timestamp may be from our clock, either way.
MAX_CLOCK_SKEW_SECONDS = 300

log = logging.getLogger(__name__)
blueprint = Blueprint(INTAKE, __name__)


def enabled(settings: Settings) -> bool:
    return bool(settings.mailgun_signing_key)


def install(app: Flask, settings: Settings) -> None:
    app.register_blueprint(blueprint)


def answer(verdict: Verdict) -> tuple[Response, int]:
    """The one place a verdict becomes Mailgun's answer: 503 makes Mailgun retry."""
    return provider_answer(verdict)


def denied(why: str) -> tuple[Response, int]:
    log.warning("| refused: %s", why)
    response = jsonify(message=why)
    response.headers["WWW-Authenticate"] = 'Mailgun-Signature realm="smime-collector"'
    return response, 401


def signature_ok(key: str, timestamp: str, token: str, signature: str) -> bool:
    expected = hmac.new(
        key.encode("utf-8"), (timestamp + token).encode("utf-8"), hashlib.sha256
    ).hexdigest()
    return hmac.compare_digest(expected.encode("ascii"), signature.strip().lower().encode("utf-8"))


@blueprint.post(PATH)
@door(log)
def mailgun(deadline: Deadline) -> tuple[Response, int]:
    try:
        form = read_form()
        timestamp, token, signature = (
            text_field(form, name) for name in ("timestamp", "token", "signature")
        )
    except BadForm as exc:
        return bad_request(log, str(exc))
    if timestamp is None or token is None or signature is None:
        return denied("timestamp, token and signature are required (Mailgun signs every post)")
    if not signature_ok(state().settings.mailgun_signing_key, timestamp, token, signature):
        return denied("signature does not match timestamp and token (check mailgun-signing-key)")
    try:
        skew = abs(time.time() - float(timestamp))
    except ValueError:
        return jsonify(message="timestamp must be seconds since 1970"), 400
    if not skew <= MAX_CLOCK_SKEW_SECONDS:
        return denied(
            f"timestamp is {skew:.0f} s from this server's clock, more than "
            f"{MAX_CLOCK_SKEW_SECONDS} s (a replay, or a clock out of sync)"
        )
    # Only a fresh, correctly signed request may learn a remembered answer: a stale capture is
    # refused above whatever its token got when it was fresh.
    remembered = answers.recall(INTAKE, token, "token", log)
    if remembered is not None:
        return answer(remembered)
    raw = form.get("body-mime")
    if raw is None:
        return jsonify(
            message="body-mime is missing: forward() the route to a URL ending in mime"
        ), 400
    envelope = Envelope(_lenient(form.get("sender")), tuple(_recipients(form.get("recipient"))))
    del form  # the message is held once from here on
    verdict = judge(raw, INTAKE, envelope, deadline)
    answers.remember(INTAKE, token, verdict)
    return answer(verdict)


def _lenient(value: bytes | None) -> str | None:
    """Envelope fields are for the log only: never a reason to refuse a message."""
    return None if value is None else value.decode("utf-8", "replace")


def _recipients(value: bytes | None) -> list[str]:
    text = _lenient(value) or ""
    return [item.strip() for item in text.split(",") if item.strip()]
