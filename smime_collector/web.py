"""The web service: an app factory wiring the intakes and operator routes. HTTP only here.

``create_app(settings)`` builds an app (tests build their own); ``gunicorn
smime_collector.web:app`` (and the seed's ``webapp:app``) loads the settings from
``$WEBAPP_INI`` (default ``./webapp.ini``) and the environment on first access to ``app``. Each
intake is a blueprint in ``smime_collector/intake/``; no crypto and no store writes happen in
this module.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable, Iterable
from typing import Any

from flask import Flask, Response, jsonify, request
from werkzeug.exceptions import HTTPException

from smime_collector import logsetup, metrics, ops, ui
from smime_collector.config import Settings, load_settings
from smime_collector.intake import mailgun, postmark, raw, sendgrid, ses, sparkpost
from smime_collector.intake.common import STATE_KEY, AppState
from smime_collector.pipeline import Collector
from smime_collector.serving import request_budget

REQUEST_ID_HEADER = "X-Request-Id"

log = logging.getLogger("smime_collector.webapp")

#: The doors besides SparkPost's; each exists only when its secret is configured (else 404).
OPTIONAL_DOORS = (mailgun, postmark, sendgrid, ses, raw)
#: Every route mail comes in by: requests to these are timed, the operator's own are not.
INTAKE_PATHS = frozenset({"/", *(door.PATH for door in OPTIONAL_DOORS)})


def create_app(settings: Settings | None = None, collector: Collector | None = None) -> Flask:
    """The app for ``settings`` (default: the INI file); ``collector`` replaces the pipeline."""
    settings = settings or load_settings()
    sink = logsetup.attach("webapp", settings.log_file, settings.log_level, settings.log_format)
    collector = collector or Collector.build(settings, sink)
    if collector.sink is None:
        collector.sink = sink
    with sink.context("start-up"):
        for key, why in settings.risks():
            log.warning("configuration: %s %s", key, why)
    if not settings.webhook_token:
        print("WARNING: x-messagesystems-webhook-token is EMPTY", file=sys.stderr)
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = settings.max_request_bytes
    app.extensions[STATE_KEY] = AppState(settings, collector, request_budget(os.environ))
    app.register_blueprint(sparkpost.blueprint)
    for door in OPTIONAL_DOORS:
        if door.enabled(settings):
            door.install(app, settings)
    app.register_blueprint(ops.blueprint)
    if settings.ui_token:
        ui.install(app, settings)
    app.wsgi_app = RequestScope(app.wsgi_app, sink)  # type: ignore[method-assign]

    @app.before_request
    def start_clock() -> None:
        """Every request is in flight until answered (a worker timeout counts the ones that
        never are); only those to a mail intake are timed: the operator's own routes
        (health, metrics, lookups, the page) are not."""
        metrics.request_started(intake=request.path in INTAKE_PATHS and request.method == "POST")

    @app.after_request
    def count_request(response: Response) -> Response:
        """Every answer counts, error handlers' (413, 503) included."""
        metrics.request_finished(response.status_code)
        return response

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> tuple[Response, int]:
        return jsonify(message=exc.description or exc.name), exc.code or 500

    @app.errorhandler(Exception)
    def unexpected(exc: Exception) -> tuple[Response, int]:
        log.exception("unexpected error handling %s %s", request.method, request.path)
        return jsonify(message="internal error; retry later"), 503

    return app


class RequestScope:
    """WSGI middleware: every line logged while serving a request carries its request id (the
    caller's ``X-Request-Id`` when it is safe to log, else a new one) and goes to this app's log
    only; the id is echoed in the response so a sender can quote it."""

    def __init__(self, app: Callable[..., Iterable[bytes]], sink: logsetup.LogSink) -> None:
        self.app = app
        self.sink = sink

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]):
        rid = logsetup.request_id_from(environ.get("HTTP_X_REQUEST_ID"))

        def start(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            headers.append((REQUEST_ID_HEADER, rid))
            return start_response(status, headers, exc_info)

        with self.sink.context(rid):
            return self.app(environ, start)


def __getattr__(name: str) -> Flask:
    """``webapp.app`` for gunicorn, built lazily so importing this module reads no config."""
    if name == "app":
        global app
        app = create_app()
        return app
    raise AttributeError(name)
