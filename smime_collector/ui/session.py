"""Who is signed in to ``/ui``, and whether a form really came from our page.

The session is Flask's signed cookie (``HttpOnly``, ``SameSite=Strict``, ``Secure`` whenever
the request came over TLS, path ``/ui``); it records when its holder signed in, and the page
refuses it ``ui-session-hours`` later, whatever the browser does with the cookie's expiry.

Every form that changes something (sign-in, sign-out) carries a token that must equal a random
value kept in the session: a page on another site can make a browser post a form, but cannot
read our page or our cookie, so it cannot know that value. This is the same synchronizer-token
design as Flask-WTF's ``CSRFProtect``, in a few lines scoped to this blueprint: ``CSRFProtect``
guards every POST of the app, and every mail intake (machine-to-machine, authenticated by its
own secret) would then need an exemption, with a forgotten one breaking mail delivery.
"""

from __future__ import annotations

import hmac
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from flask import Flask, current_app, request, session
from flask.sessions import SecureCookieSessionInterface

from smime_collector.intake.common import state
from smime_collector.ui import ratelimit

STATE_KEY = "smime_collector_ui"
CSRF_FIELD = "csrf_token"


@dataclass
class UIState:
    """Per app, what the settings do not hold: the sign-in limiter (the workers' shared one
    under gunicorn) and the clock (tests move it instead of waiting)."""

    limiter: ratelimit.SignInLimiter = field(default_factory=ratelimit.limiter)
    clock: Callable[[], float] = field(default=time.time)


def ui_state() -> UIState:
    return current_app.extensions[STATE_KEY]


class UISessionInterface(SecureCookieSessionInterface):
    """Flask's signed cookie, marked ``Secure`` when the request itself came over TLS."""

    def get_cookie_secure(self, app: Flask) -> bool:
        return request.is_secure


def csrf_token() -> str:
    """This session's form token, made on first use."""
    if "csrf" not in session:
        session["csrf"] = secrets.token_urlsafe(32)
    return session["csrf"]


def csrf_ok() -> bool:
    expected = session.get("csrf")
    sent = request.form.get(CSRF_FIELD, "")
    return bool(expected) and hmac.compare_digest(sent.encode(), str(expected).encode())


def sign_in() -> None:
    """A new session for the person who just gave the token: nothing from before survives,
    and the form token changes with the privilege."""
    session.clear()
    session.permanent = True
    session["signed_in_at"] = ui_state().clock()
    session["csrf"] = secrets.token_urlsafe(32)


def signed_in() -> bool:
    started = session.get("signed_in_at")
    if not isinstance(started, int | float):
        return False
    age = ui_state().clock() - started
    return 0 <= age < state().settings.ui_session_hours * 3600


def sign_out() -> None:
    session.clear()
