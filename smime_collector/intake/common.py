"""What the HTTP intakes and operator routes share: the app's state and credential checks."""

from __future__ import annotations

import hmac
from dataclasses import dataclass

from flask import Response, current_app, jsonify, request

from smime_collector.config import Settings
from smime_collector.pipeline import Collector

STATE_KEY = "smime_collector"


@dataclass(frozen=True)
class AppState:
    """Built once per app by ``create_app``; blueprints read it through :func:`state`."""

    settings: Settings
    collector: Collector


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
