"""The operator page at ``/ui``: server-rendered, no JavaScript, signed in with ``ui-token``.

It exists only when ``ui-token`` is configured (otherwise ``/ui`` is a 404 like any unknown
path). :func:`install` wires it into an app: the blueprint, the session cookie's settings and
the key that signs it, which is derived from the token, so every worker and every restart agree
on it without a new secret to manage, and changing the token signs everyone out.

Importing this package stays cheap: gunicorn's master imports :mod:`.ratelimit` from it before
forking, and should not load the app's modules for that.
"""

from __future__ import annotations

import hashlib
import hmac
from datetime import timedelta
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from flask import Flask

    from smime_collector.config import Settings

COOKIE_NAME = "smime_ui"
PREFIX = "/ui"


def install(app: Flask, settings: Settings) -> None:
    """Add the operator page to ``app``; ``settings.ui_token`` must be set."""
    from smime_collector.ui.session import STATE_KEY, UISessionInterface, UIState
    from smime_collector.ui.views import blueprint

    app.secret_key = hmac.new(
        settings.ui_token.encode("utf-8"), b"smime-collector ui session", hashlib.sha256
    ).digest()
    app.session_interface = UISessionInterface()
    app.config.update(
        SESSION_COOKIE_NAME=COOKIE_NAME,
        SESSION_COOKIE_PATH=PREFIX,
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Strict",
        PERMANENT_SESSION_LIFETIME=timedelta(hours=settings.ui_session_hours),
        # The lifetime counts from sign-in, not from the last page seen.
        SESSION_REFRESH_EACH_REQUEST=False,
    )
    app.extensions[STATE_KEY] = UIState()
    app.register_blueprint(blueprint, url_prefix=PREFIX)
