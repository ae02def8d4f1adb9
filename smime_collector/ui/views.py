"""The operator page's routes: dashboard, certificates, one address, recent verdicts, sign-in.

Everything is rendered on the server from the store (certificates, history, the verdict
journal); nothing needs JavaScript, and the Content-Security-Policy allows none. Pages hold
email addresses, so they are never cached.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from flask import (
    Blueprint,
    Response,
    abort,
    redirect,
    render_template,
    request,
    url_for,
)
from werkzeug.exceptions import HTTPException

from smime_collector import __version__
from smime_collector.intake.common import state, token_ok
from smime_collector.store.base import Entry
from smime_collector.trust import fingerprint
from smime_collector.ui.session import (
    CSRF_FIELD,
    csrf_ok,
    csrf_token,
    sign_in,
    sign_out,
    signed_in,
    ui_state,
)
from smime_collector.verdict import REASONS, Outcome

blueprint = Blueprint(
    "ui", __name__, template_folder="templates", static_folder="static", static_url_path="/static"
)

PAGE_SIZE = 50
#: Bounds on what a query string may ask for.
MAX_QUERY_CHARS = 254
MAX_PAGE = 100_000
#: The dashboard's and the list's warning horizon.
EXPIRING_DAYS = 30
WINDOWS = (("24 hours", timedelta(hours=24)), ("7 days", timedelta(days=7)))
CSP = (
    "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
    "frame-ancestors 'none'; base-uri 'none'"
)
OPEN_ENDPOINTS = frozenset({"ui.login", "ui.static"})


def now() -> datetime:
    return datetime.fromtimestamp(ui_state().clock(), UTC)


@blueprint.before_request
def guard() -> Response | None:
    """Forms must carry the session's token; every page but sign-in needs a live session."""
    if request.method == "POST" and not csrf_ok():
        abort(403, "This form did not come from this page, or it has expired: reload the page.")
    if request.endpoint in OPEN_ENDPOINTS or signed_in():
        return None
    return redirect(url_for("ui.login", next=request.full_path.rstrip("?")), 303)


@blueprint.after_request
def security_headers(response: Response) -> Response:
    response.headers["Content-Security-Policy"] = CSP
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["X-Frame-Options"] = "DENY"
    response.headers["Referrer-Policy"] = "no-referrer"
    if request.endpoint != "ui.static":
        response.headers["Cache-Control"] = "no-store"
    return response


@blueprint.errorhandler(HTTPException)
def error_page(exc: HTTPException) -> tuple[str, int]:
    return render_template("ui/error.html", error=exc), exc.code or 500


@blueprint.context_processor
def common() -> dict[str, object]:
    return {
        "csrf_field": CSRF_FIELD,
        "csrf_token": csrf_token,
        "version": __version__,
        "signed_in": signed_in(),
        "fmt_time": fmt_time,
    }


# -- sign-in ---------------------------------------------------------------------------------


@blueprint.route("/login", methods=["GET", "POST"])
def login() -> Response | tuple[str, int] | str:
    next_page = safe_next(request.values.get("next", ""))
    if request.method == "GET":
        if signed_in():
            return redirect(next_page, 303)
        return render_template("ui/login.html", next=next_page, problem=None)
    client = request.remote_addr or "unknown"
    limiter = ui_state().limiter
    wait = limiter.admit(client)
    if wait:
        problem = f"Too many failed sign-ins. Try again in {wait // 60 + 1} minutes."
        page = render_template("ui/login.html", next=next_page, problem=problem)
        return Response(page, 429, {"Retry-After": str(wait)})
    if not token_ok(request.form.get("token", ""), state().settings.ui_token):
        # The form again with the problem, as a 200: it is a page to read, not an error of the
        # page (a 401 would also need an HTTP authentication scheme this form does not use).
        return render_template("ui/login.html", next=next_page, problem="Wrong token."), 200
    limiter.succeeded(client)
    sign_in()
    return redirect(next_page, 303)


@blueprint.post("/logout")
def logout() -> Response:
    sign_out()
    return redirect(url_for("ui.login"), 303)


def safe_next(target: str) -> str:
    """Only a path on this page: never another site (an open redirect)."""
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or not parts.path.startswith("/ui/") or "\\" in target:
        return url_for("ui.dashboard")
    return target


# -- pages -----------------------------------------------------------------------------------


@blueprint.get("/")
def dashboard() -> str:
    store = state().collector.store
    at = now()
    soon = store.stats(at + timedelta(days=EXPIRING_DAYS))
    expired = store.stats(at).expiring
    counts = {label: store.verdict_counts(at - span) for label, span in WINDOWS}
    keys = sorted({key for found in counts.values() for key in found}, key=_outcome_order)
    rows = [
        (outcome, reason, [counts[label][outcome, reason] for label, _ in WINDOWS])
        for outcome, reason in keys
    ]
    totals = {label: sum(found.values()) for label, found in counts.items()}
    return render_template(
        "ui/dashboard.html",
        stored=soon.count,
        expiring=soon.expiring - expired,
        expired=expired,
        expiring_days=EXPIRING_DAYS,
        windows=[label for label, _ in WINDOWS],
        rows=rows,
        totals=totals,
        explanations=REASONS,
    )


@blueprint.get("/certs")
def certificates() -> str:
    text = query_text()
    page = page_number()
    expiring_only = request.args.get("expiring") == "1"
    at = now()
    before = at + timedelta(days=EXPIRING_DAYS) if expiring_only else None
    found = state().collector.store.search(text, (page - 1) * PAGE_SIZE, PAGE_SIZE, before)
    return render_template(
        "ui/certificates.html",
        q=text,
        expiring_only=expiring_only,
        rows=[CertRow.of(entry, at) for entry in found.entries],
        page=page,
        total=found.total,
        pages=max(1, -(-found.total // PAGE_SIZE)),
    )


@blueprint.get("/address/<path:address>")
def address(address: str) -> str:
    store = state().collector.store
    address = address.strip().lower()
    cert = store.get(address)
    journal = store.verdicts(address, "", 0, PAGE_SIZE)
    return render_template(
        "ui/address.html",
        address=address,
        cert=CertDetail.of(cert, now()) if cert else None,
        history=store.history(address),
        verdicts=[v for v in journal.entries if address in (v.email, v.sender)],
    )


@blueprint.get("/pem/<path:address>")
def pem(address: str) -> Response:
    cert = state().collector.store.get(address)
    if cert is None:
        abort(404, "No certificate is stored for this address.")
    name = address.strip().lower()
    return Response(
        cert.public_bytes(serialization.Encoding.PEM),
        content_type="application/pem-certificate-chain",
        headers={"Content-Disposition": f'attachment; filename="{_file_name(name)}.pem"'},
    )


@blueprint.get("/verdicts")
def verdicts() -> str:
    text = query_text()
    page = page_number()
    outcome = request.args.get("outcome", "")
    if outcome and outcome not in {o.value for o in Outcome}:
        abort(400, f"outcome must be one of {', '.join(o.value for o in Outcome)}.")
    found = state().collector.store.verdicts(text, outcome, (page - 1) * PAGE_SIZE, PAGE_SIZE)
    return render_template(
        "ui/verdicts.html",
        q=text,
        outcome=outcome,
        outcomes=[o.value for o in Outcome],
        entries=found.entries,
        page=page,
        more=found.more,
    )


# -- helpers ---------------------------------------------------------------------------------


def query_text() -> str:
    text = request.args.get("q", "").strip()
    if len(text) > MAX_QUERY_CHARS:
        abort(400, f"The search text is longer than {MAX_QUERY_CHARS} characters.")
    return text


def page_number() -> int:
    raw = request.args.get("page", "1")
    if not raw.isdigit() or not 1 <= int(raw) <= MAX_PAGE:
        abort(400, f"page must be a whole number from 1 to {MAX_PAGE}.")
    return int(raw)


def fmt_time(value: datetime | None) -> str:
    return "" if value is None else value.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def _outcome_order(key: tuple[str, str]) -> tuple[int, str]:
    order = [o.value for o in Outcome]
    outcome, reason = key
    return (order.index(outcome) if outcome in order else len(order), reason)


def _file_name(address: str) -> str:
    """The address as a download name, without quotes or path characters."""
    return "".join(ch if ch.isalnum() or ch in "@.-_+" else "_" for ch in address)


def expiry_note(not_after: datetime, at: datetime) -> tuple[str, str]:
    """(CSS class, words) for a notAfter: expired, expiring within 30 days, or fine."""
    left = not_after - at
    if left.total_seconds() <= 0:
        return "expired", "expired"
    if left <= timedelta(days=EXPIRING_DAYS):
        days = left.days
        return (
            "expiring",
            "expires today" if days == 0 else f"expires in {days} day{'s' * (days != 1)}",
        )
    return "", ""


def key_words(cert: x509.Certificate) -> str:
    key = cert.public_key()
    if isinstance(key, rsa.RSAPublicKey):
        return f"RSA, {key.key_size} bits"
    if isinstance(key, ec.EllipticCurvePublicKey):
        return f"EC, {key.curve.name}"
    return type(key).__name__.removeprefix("_")


def short_issuer(rfc4514: str) -> str:
    """The issuer's CN when it has one: what people recognise."""
    for part in rfc4514.split(","):
        if part.startswith("CN="):
            return part[3:].replace("\\", "")
    return rfc4514


@dataclass(frozen=True)
class CertRow:
    email: str
    issuer: str
    issuer_full: str
    not_after: datetime
    sha256: str
    flag: str
    note: str

    @classmethod
    def of(cls, entry: Entry, at: datetime) -> CertRow:
        flag, note = expiry_note(entry.not_after, at)
        return cls(
            entry.email,
            short_issuer(entry.issuer),
            entry.issuer,
            entry.not_after,
            entry.sha256,
            flag,
            note,
        )


@dataclass(frozen=True)
class CertDetail:
    subject: str
    issuer: str
    serial: str
    not_before: datetime
    not_after: datetime
    sha256: str
    key: str
    flag: str
    note: str

    @classmethod
    def of(cls, cert: x509.Certificate, at: datetime) -> CertDetail:
        flag, note = expiry_note(cert.not_valid_after_utc, at)
        return cls(
            cert.subject.rfc4514_string(),
            cert.issuer.rfc4514_string(),
            f"{cert.serial_number:x}",
            cert.not_valid_before_utc,
            cert.not_valid_after_utc,
            fingerprint(cert),
            key_words(cert),
            flag,
            note,
        )
