"""SparkPost Inbound Relay webhook: HTTP in, verdicts out. No crypto and no file writes here.

``create_app(settings)`` builds an app (tests build their own); ``gunicorn webapp:app`` loads
the settings from ``$WEBAPP_INI`` (default ``./webapp.ini``) on first access to ``app``.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import sys
import time
from datetime import UTC, datetime
from typing import Any

from flask import Flask, Response, g, jsonify, request
from werkzeug.exceptions import HTTPException

from smime_collector import __version__, metrics
from smime_collector.config import Settings, load_settings
from smime_collector.logsetup import get_logger
from smime_collector.lookup import listing, parse_duration, stored_pem
from smime_collector.pipeline import Collector
from smime_collector.verdict import Outcome, Verdict

TOKEN_HEADER = "X-MessageSystems-Webhook-Token"


class BadRequest(Exception):
    """The relay request is not what SparkPost sends; the message names the field."""


def create_app(settings: Settings | None = None, collector: Collector | None = None) -> Flask:
    """The app for ``settings`` (default: the INI file); ``collector`` replaces the pipeline."""
    settings = settings or load_settings()
    log = get_logger("webapp", settings.log_file, settings.log_level)
    collector = collector or Collector.build(settings, log)
    if not settings.webhook_token:
        warning = "x-messagesystems-webhook-token is EMPTY: anyone can post to this webhook"
        log.warning(warning)
        print(f"WARNING: {warning}", file=sys.stderr)
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = settings.max_request_bytes
    app.extensions["collector"] = collector

    @app.post("/")
    def relay() -> tuple[Response, int]:
        return handle_relay(collector, settings)

    @app.before_request
    def start_clock() -> None:
        g.started = time.perf_counter()

    @app.after_request
    def count_relay_request(response: Response) -> Response:
        """Every answer to the relay counts, error handlers' (413, 503) included."""
        if request.path == "/" and request.method == "POST":
            metrics.REQUEST_SECONDS.observe(time.perf_counter() - g.get("started", 0.0))
            metrics.REQUESTS.labels(str(response.status_code)).inc()
        return response

    @app.get("/healthz")
    def healthz() -> tuple[Response, int]:
        return health(collector)

    @app.get("/metrics")
    def metrics_route() -> Response | tuple[Response, int]:
        if settings.metrics_token and not bearer_ok(settings.metrics_token):
            return bearer_denied()
        body, content_type = metrics.exposition()
        return Response(body, content_type=content_type)

    @app.get("/certs")
    def certs_list() -> tuple[Response, int]:
        if denied := lookup_denied(settings):
            return denied
        expiring = request.args.get("expiring-within")
        before = None
        if expiring is not None:
            window = parse_duration(expiring)
            if window is None:
                return jsonify(message="expiring-within must look like 30d, 12h or 90m"), 400
            before = datetime.now(UTC) + window
        entries = listing(collector.store, before)
        return jsonify(certificates=[e.as_dict() for e in entries], count=len(entries)), 200

    @app.get("/certs/<path:address>")
    def certs_one(address: str) -> Response | tuple[Response, int]:
        if denied := lookup_denied(settings):
            return denied
        pem = stored_pem(collector.store, address)
        if pem is None:
            return jsonify(message="No certificate stored for this address"), 404
        return Response(pem, content_type="application/pem-certificate-chain")

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> tuple[Response, int]:
        return jsonify(message=exc.description or exc.name), exc.code or 500

    @app.errorhandler(Exception)
    def unexpected(exc: Exception) -> tuple[Response, int]:
        log.exception("unexpected error handling %s %s", request.method, request.path)
        return jsonify(message="internal error; retry later"), 503

    return app


def handle_relay(collector: Collector, settings: Settings) -> tuple[Response, int]:
    log = collector.log
    log.info(
        "Request from %s,scheme=%s,path=%s",
        request.remote_addr,
        request.scheme,
        request.path,
    )
    if request.mimetype != "application/json":
        return jsonify(message="Unknown Content-Type in request headers"), 400
    if not token_ok(request.headers.get(TOKEN_HEADER), settings.webhook_token):
        log.info("| invalid %s", TOKEN_HEADER)
        return jsonify(message=f"Invalid {TOKEN_HEADER} in request headers"), 401
    body = request.get_data(cache=False)
    log.info("| len(headers)=%d,len(body)=%d", len(request.headers), len(body))
    try:
        messages = parse_batch(body)
        del body  # each message is held once from here on, as bytes
    except BadRequest as exc:
        log.info("| bad request: %s", exc)
        return jsonify(message=str(exc)), 400
    received = datetime.now(UTC)
    verdicts = [judge(collector, relay_message, raw, received) for relay_message, raw in messages]
    if any(v.outcome is Outcome.TEMPFAIL for v in verdicts):
        return jsonify(message="Temporary failure; please retry", count=len(verdicts)), 503
    return jsonify(message="OK", count=len(verdicts)), 200


def bearer_ok(expected: str) -> bool:
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    return scheme.lower() == "bearer" and token_ok(token.strip(), expected)


def lookup_denied(settings: Settings) -> tuple[Response, int] | None:
    """Lookup routes exist only when a lookup-token is configured, and need it as Bearer."""
    if not settings.lookup_token:
        return jsonify(message="Not Found"), 404
    if not bearer_ok(settings.lookup_token):
        return bearer_denied()
    return None


def bearer_denied() -> tuple[Response, int]:
    """401 with the challenge HTTP requires of every 401 (RFC 9110 section 11.6.1)."""
    response = jsonify(message="Invalid or missing Authorization: Bearer token")
    response.headers["WWW-Authenticate"] = "Bearer"
    return response, 401


def health(collector: Collector) -> tuple[Response, int]:
    """Readiness without secrets: anchors loaded, folder writable, version. No addresses."""
    anchors = len(collector.anchors.current())
    writable = collector.store.writable()
    failing = [
        name for name, ok in (("trust-anchors", anchors > 0), ("certs-dir", writable.ok)) if not ok
    ]
    body = {
        "status": "fail" if failing else "ok",
        "version": __version__,
        "trust_anchors": anchors,
        "certs_dir_writable": writable.ok,
    }
    if failing:
        body["failing"] = failing
        return jsonify(body), 503
    return jsonify(body), 200


def token_ok(sent: str | None, expected: str) -> bool:
    if not expected:
        return True
    return sent is not None and hmac.compare_digest(sent.encode("utf-8"), expected.encode("utf-8"))


def judge(
    collector: Collector, relay_message: dict[str, Any], raw: bytes, received: datetime
) -> Verdict:
    collector.log.info(
        "| msg_from=%s,rcpt_to=%s,len(email_rfc822)=%d",
        relay_message.get("msg_from"),
        relay_message.get("rcpt_to"),
        len(raw),
    )
    return collector.read_smime_email(raw, received)


def parse_batch(body: bytes) -> list[tuple[dict[str, Any], bytes]]:
    """Validate the whole relay batch before judging any message."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadRequest(f"request body is not valid UTF-8 (byte {exc.start})") from None
    try:
        batch = json.loads(text)
    except json.JSONDecodeError as exc:
        raise BadRequest(
            f"request body is not valid JSON: {exc.msg} at line {exc.lineno}"
        ) from None
    except RecursionError:  # json raises it for deeply nested arrays or objects
        raise BadRequest("request body is not valid JSON: nested too deeply") from None
    if not isinstance(batch, list):
        raise BadRequest("request body must be a JSON array of relay events")
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


def _relay_content(item: Any, where: str) -> tuple[dict[str, Any], bytes]:
    """The message bytes and the envelope fields the log names (not the JSON content)."""
    msys = _field(item, "msys", where, dict)
    relay = _field(msys, "relay_message", f"{where}.msys", dict)
    envelope = {key: relay.get(key) for key in ("msg_from", "rcpt_to")}
    content = _field(relay, "content", f"{where}.msys.relay_message", dict)
    where = f"{where}.msys.relay_message.content"
    email = _field(content, "email_rfc822", where, str)
    is_base64 = content.get("email_rfc822_is_base64", False)
    if not isinstance(is_base64, bool):
        raise BadRequest(f"{where}.email_rfc822_is_base64 must be a boolean")
    if not is_base64:
        try:
            return envelope, email.encode("utf-8", "surrogateescape")
        except UnicodeEncodeError as exc:  # a \ud800-style escape no bytes can stand for
            raise BadRequest(
                f"{where}.email_rfc822 holds a lone surrogate at character {exc.start}"
            ) from None
    try:
        return envelope, base64.b64decode("".join(email.split()), validate=True)
    except (binascii.Error, ValueError):
        raise BadRequest(f"{where}.email_rfc822 is not valid base64") from None


def __getattr__(name: str) -> Flask:
    """``webapp.app`` for gunicorn, built lazily so importing this module reads no config."""
    if name == "app":
        global app
        app = create_app()
        return app
    raise AttributeError(name)
