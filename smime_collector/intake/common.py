"""What the HTTP intakes and operator routes share: the app's state, credential checks and the
answers every provider's door gives alike."""

from __future__ import annotations

import base64
import binascii
import functools
import hmac
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from flask import Response, current_app, jsonify, request
from werkzeug.exceptions import RequestEntityTooLarge

from smime_collector.config import Settings
from smime_collector.deadline import Deadline
from smime_collector.delivery import Delivery, Envelope
from smime_collector.pipeline import Collector
from smime_collector.verdict import Outcome, Verdict

STATE_KEY = "smime_collector"
#: The realm HTTP Basic doors name in their challenge.
BASIC_REALM = "smime-collector"

#: A door's view: it answers one request within the budget it is given.
View = Callable[[Deadline], tuple[Response, int]]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class AppState:
    """Built once per app by ``create_app``; blueprints read it through :func:`state`.

    ``request_seconds`` is each request's time budget, from ``GUNICORN_TIMEOUT``, which is
    fixed for the life of the process (see :func:`smime_collector.serving.request_budget`).
    """

    settings: Settings
    collector: Collector
    request_seconds: float


def state() -> AppState:
    return current_app.extensions[STATE_KEY]


def token_ok(sent: str | None, expected: str) -> bool:
    """Constant-time comparison; an empty ``expected`` means no check is configured."""
    if not expected:
        return True
    return sent is not None and hmac.compare_digest(sent.encode("utf-8"), expected.encode("utf-8"))


def bearer_ok(expected: str) -> bool:
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    return scheme.lower() == "bearer" and token_ok(token.strip(), expected)


def bearer_denied() -> tuple[Response, int]:
    """401 with the challenge HTTP requires of every 401 (RFC 9110 section 11.6.1)."""
    response = jsonify(message="Invalid or missing Authorization: Bearer token")
    response.headers["WWW-Authenticate"] = "Bearer"
    return response, 401


def basic_ok(expected: str) -> bool:
    """HTTP Basic credentials equal to ``expected`` (``user:password``), in constant time.

    Compared as the decoded bytes, so no user or password character is reinterpreted.
    """
    scheme, _, encoded = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "basic" or not expected:
        return False
    try:
        sent = base64.b64decode(encoded.strip(), validate=True)
    except (binascii.Error, ValueError):
        return False
    return hmac.compare_digest(sent, expected.encode("utf-8"))


def basic_denied() -> tuple[Response, int]:
    """401 with the Basic challenge (the provider puts the credentials in the webhook URL)."""
    response = jsonify(message="Invalid or missing HTTP Basic credentials")
    response.headers["WWW-Authenticate"] = f'Basic realm="{BASIC_REALM}", charset="UTF-8"'
    return response, 401


def bad_request(door_log: logging.Logger, why: str) -> tuple[Response, int]:
    """400 naming what is wrong with the request, logged in the door's own log."""
    door_log.info("| bad request: %s", why)
    return jsonify(message=why), 400


def ok() -> tuple[Response, int]:
    """200: the provider is done with the delivery and does not send it again."""
    return jsonify(message="OK"), 200


def retry() -> tuple[Response, int]:
    """503: the provider sends the delivery again later (only a failing dependency gets it)."""
    return jsonify(message="Temporary failure; please retry"), 503


def provider_answer(verdict: Verdict) -> tuple[Response, int]:
    """A verdict as a provider's door answers it: 503 for ``tempfail``, so that the provider
    retries; 200 for every final verdict, which the provider is not told (only ``/raw``, whose
    caller holds the token, answers with the verdict itself)."""
    if verdict.outcome is Outcome.TEMPFAIL:
        return retry()
    return ok()


def log_request() -> None:
    """The first line of every intake request, as the relay's."""
    log.info("Request from %s,scheme=%s,path=%s", request.remote_addr, request.scheme, request.path)


def request_deadline() -> Deadline:
    """One budget per request, so that it is answered before gunicorn's worker timeout."""
    return Deadline.after(state().request_seconds)


def door(
    door_log: logging.Logger,
    *,
    basic: Callable[[Settings], str] | None = None,
    bearer: Callable[[Settings], str] | None = None,
) -> Callable[[View], Callable[[], tuple[Response, int]]]:
    """How every HTTP door but the relay's opens a request, as a decorator of its view.

    First the request's log line; then the credentials a header carries, when the door has
    them (HTTP Basic equal to ``basic(settings)``, or a bearer token equal to
    ``bearer(settings)``), refused with a 401 logged in the door's own log (``door_log``);
    only then the request's time budget, which the view is called with. Doors whose
    credentials travel in the body (Mailgun's signature, SNS's) check them in the view.
    """

    def wrap(view: View) -> Callable[[], tuple[Response, int]]:
        @functools.wraps(view)
        def opened() -> tuple[Response, int]:
            log_request()
            settings = state().settings
            if basic is not None and not basic_ok(basic(settings)):
                door_log.warning("| refused: invalid HTTP Basic credentials")
                return basic_denied()
            if bearer is not None and not bearer_ok(bearer(settings)):
                door_log.warning("| refused: invalid bearer token")
                return bearer_denied()
            return view(request_deadline())

        return opened

    return wrap


def read_body() -> bytes:
    """The request body, refused with 413 when it is larger than ``max-request-bytes``.

    werkzeug refuses a Content-Length over the limit before reading, but silently cuts a
    chunked body at the limit: one more byte past it means the body was too large.
    """
    limit = state().settings.max_request_bytes
    body = request.get_data(cache=False)
    if request.content_length is None and len(body) >= limit:
        if request.environ["wsgi.input"].read(1):
            raise RequestEntityTooLarge(f"request body larger than max-request-bytes ({limit})")
    return body


def judge(raw: bytes, intake: str, envelope: Envelope, deadline: Deadline) -> Verdict:
    """The pipeline's verdict on one message that came in through an HTTP door."""
    log.info(
        "| msg_from=%s,rcpt_to=%s,provider_id=%s,bytes=%d",
        envelope.sender,
        ",".join(envelope.recipients),
        envelope.provider_id,
        len(raw),
    )
    delivery = Delivery(raw, intake, datetime.now(UTC), envelope)
    return state().collector.judge(delivery, deadline)
