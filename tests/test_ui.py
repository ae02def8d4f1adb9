"""The operator page at /ui, in-process: sign-in, session, CSRF, headers and what each page shows.

Messages are judged by the real pipeline (generated PKI, DKIM keys on the loopback DNS server);
the page reads what the store and its verdict journal then hold. The browser tests
(``tests/test_browser.py``) drive the same pages in Chromium against real gunicorn.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from html import unescape
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from flask import Flask
from flask.testing import FlaskClient

from smime_collector.config import Settings
from smime_collector.journal import JournalEntry
from smime_collector.ui import ratelimit
from smime_collector.ui.session import STATE_KEY
from smime_collector.ui.views import CSP, PAGE_SIZE
from smime_collector.verdict import Reason
from tests import pki
from tests.helpers import post_batch, relay_event
from tests.mailfactory import MailFactory
from webapp import create_app

UI_TOKEN = "operator-token-0123456789abcdef"
CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


class Clock:
    """A clock the test moves; the page and its limiter read it."""

    def __init__(self) -> None:
        self.now = datetime.now(UTC).timestamp()

    def __call__(self) -> float:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta).total_seconds()


@pytest.fixture(scope="module")
def mail(dns_server, tmp_path_factory: pytest.TempPathFactory) -> MailFactory:
    return MailFactory.create(dns_server, tmp_path_factory.mktemp("ui-pki"))


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def app(make_settings, mail, clock) -> Flask:
    settings = make_settings(trusted_certs=str(mail.ca_file), ui_token=UI_TOKEN)
    app = create_app(settings)
    state = app.extensions[STATE_KEY]
    state.clock = clock
    state.limiter = ratelimit.SignInLimiter(clock)
    return app


def csrf_of(html: str) -> str:
    return CSRF.search(html)[1]


def sign_in(client: FlaskClient, token: str = UI_TOKEN, next_page: str = ""):
    form = csrf_of(client.get("/ui/login").get_data(as_text=True))
    data = {"csrf_token": form, "token": token}
    if next_page:
        data["next"] = next_page
    return client.post("/ui/login", data=data)


@pytest.fixture
def client(app) -> FlaskClient:
    client = app.test_client()
    assert sign_in(client).status_code == 303
    return client


def text_of(response) -> str:
    """The page's visible text, roughly: tags dropped, entities decoded, spaces collapsed."""
    html = response.get_data(as_text=True)
    return " ".join(unescape(re.sub(r"<[^>]+>", " ", html)).split())


def store_of(app: Flask):
    return app.extensions["smime_collector"].collector.store


# -- existence, sign-in and the session -------------------------------------------------------


def test_the_page_does_not_exist_without_a_ui_token(make_settings) -> None:
    client = create_app(make_settings()).test_client()
    for path in ("/ui", "/ui/", "/ui/login", "/ui/certs", "/ui/static/ui.css"):
        assert client.get(path).status_code == 404, path
    assert client.post("/ui/login", data={"token": ""}).status_code in (404, 405)


def test_pages_need_a_session_and_send_you_back_after_sign_in(app) -> None:
    client = app.test_client()
    answer = client.get("/ui/certs?q=alice")
    assert answer.status_code == 303
    assert answer.headers["Location"] == "/ui/login?next=/ui/certs?q%3Dalice"
    signed = sign_in(client, next_page="/ui/certs?q=alice")
    assert (signed.status_code, signed.headers["Location"]) == (303, "/ui/certs?q=alice")
    assert client.get("/ui/certs?q=alice").status_code == 200


@pytest.mark.parametrize(
    "target", ["https://evil.example/", "//evil.example/ui/", "/elsewhere", "/ui\\..\\x", ""]
)
def test_sign_in_never_sends_you_to_another_site(app, target) -> None:
    answer = sign_in(app.test_client(), next_page=target)
    assert (answer.status_code, answer.headers["Location"]) == (303, "/ui/")


def test_a_wrong_token_is_refused(app) -> None:
    client = app.test_client()
    for wrong in ("", "operator-token", UI_TOKEN + "x", UI_TOKEN.upper()):
        answer = sign_in(client, token=wrong)
        assert answer.status_code == 200  # the form again, saying why
        assert "Wrong token." in text_of(answer)
    assert client.get("/ui/").status_code == 303


def test_the_session_cookie(app, clock) -> None:
    client = app.test_client()
    client.get("/ui/login")
    answer = sign_in(client)
    cookie = answer.headers["Set-Cookie"]
    attributes = {part.strip().split("=")[0].lower() for part in cookie.split(";")[1:]}
    assert cookie.startswith("smime_ui=")
    assert {"httponly", "path", "samesite", "expires"} <= attributes
    assert "Path=/ui" in cookie and "SameSite=Strict" in cookie
    assert "secure" not in attributes  # plain HTTP: a Secure cookie would never come back
    expires = parsedate_to_datetime(re.search(r"Expires=([^;]+)", cookie)[1])
    assert abs((expires - datetime.now(UTC)) - timedelta(hours=8)) < timedelta(minutes=1)


def test_the_cookie_is_secure_over_tls(app) -> None:
    client = app.test_client()
    page = client.get("/ui/login", base_url="https://collector.example")
    assert "; Secure" in page.headers["Set-Cookie"]
    form = csrf_of(page.get_data(as_text=True))
    answer = client.post(
        "/ui/login",
        data={"csrf_token": form, "token": UI_TOKEN},
        base_url="https://collector.example",
    )
    assert answer.status_code == 303
    assert "; Secure" in answer.headers["Set-Cookie"]


def test_the_session_ends_after_ui_session_hours(client, clock) -> None:
    clock.advance(hours=8, seconds=-1)
    assert client.get("/ui/").status_code == 200
    clock.advance(seconds=1)
    assert client.get("/ui/").status_code == 303  # counted from sign-in, not from last use


def test_ui_session_hours_is_read(make_settings, clock) -> None:
    app = create_app(make_settings(ui_token=UI_TOKEN, ui_session_hours="0.5"))
    app.extensions[STATE_KEY].clock = clock
    client = app.test_client()
    sign_in(client)
    clock.advance(minutes=29)
    assert client.get("/ui/").status_code == 200
    clock.advance(minutes=1)
    assert client.get("/ui/").status_code == 303


def test_a_changed_token_signs_everyone_out(make_settings, tmp_path) -> None:
    first = create_app(make_settings(ui_token=UI_TOKEN)).test_client()
    sign_in(first)
    cookie = first.get_cookie("smime_ui", path="/ui")
    second = create_app(make_settings(ui_token=UI_TOKEN + "-rotated")).test_client()
    second.set_cookie("smime_ui", cookie.value, path="/ui")
    assert second.get("/ui/").status_code == 303


def test_sign_out(client) -> None:
    form = csrf_of(client.get("/ui/").get_data(as_text=True))
    answer = client.post("/ui/logout", data={"csrf_token": form})
    assert (answer.status_code, answer.headers["Location"]) == (303, "/ui/login")
    assert client.get("/ui/").status_code == 303


# -- CSRF ------------------------------------------------------------------------------------


def test_posts_without_the_form_token_are_refused(app, client) -> None:
    for data in ({}, {"csrf_token": ""}, {"csrf_token": "guess"}):
        answer = client.post("/ui/logout", data=data)
        assert answer.status_code == 403
        assert "did not come from this page" in text_of(answer)
    assert client.get("/ui/").status_code == 200  # still signed in
    fresh = app.test_client()
    assert fresh.post("/ui/login", data={"token": UI_TOKEN}).status_code == 403
    assert fresh.get("/ui/").status_code == 303  # the right token without a form token: no


def test_another_sessions_form_token_does_not_work(app) -> None:
    mine, theirs = app.test_client(), app.test_client()
    their_token = csrf_of(theirs.get("/ui/login").get_data(as_text=True))
    mine.get("/ui/login")
    answer = mine.post("/ui/login", data={"csrf_token": their_token, "token": UI_TOKEN})
    assert answer.status_code == 403


def test_the_form_token_changes_at_sign_in(app) -> None:
    client = app.test_client()
    before = csrf_of(client.get("/ui/login").get_data(as_text=True))
    client.post("/ui/login", data={"csrf_token": before, "token": UI_TOKEN})
    assert client.post("/ui/logout", data={"csrf_token": before}).status_code == 403


# -- rate limit ------------------------------------------------------------------------------


def test_failed_sign_ins_are_limited_per_client(app, clock) -> None:
    client = app.test_client()
    for _ in range(ratelimit.MAX_FAILURES_PER_CLIENT):
        assert "Wrong token." in text_of(sign_in(client, token="guess"))
    limited = sign_in(client)  # even the right token: no more tries for now
    assert limited.status_code == 429
    assert int(limited.headers["Retry-After"]) == ratelimit.WINDOW_SECONDS
    assert "Too many failed sign-ins" in text_of(limited)
    other = app.test_client()  # another address is not held back
    form = csrf_of(other.get("/ui/login").get_data(as_text=True))
    answer = other.post(
        "/ui/login",
        data={"csrf_token": form, "token": UI_TOKEN},
        environ_base={"REMOTE_ADDR": "192.0.2.7"},
    )
    assert answer.status_code == 303
    clock.advance(seconds=ratelimit.WINDOW_SECONDS)
    assert sign_in(client).status_code == 303


def test_the_limit_counts_all_clients_together_too(clock) -> None:
    limiter = ratelimit.SignInLimiter(clock)
    for n in range(ratelimit.MAX_FAILURES_TOTAL):
        assert limiter.admit(f"198.51.100.{n % 250}") == 0  # each a wrong token
    assert limiter.admit("203.0.113.1") == ratelimit.WINDOW_SECONDS
    clock.advance(seconds=ratelimit.WINDOW_SECONDS - 1)
    assert limiter.admit("203.0.113.1") == 1
    clock.advance(seconds=1)
    assert limiter.admit("203.0.113.1") == 0


def test_a_right_token_is_not_a_failure(clock) -> None:
    limiter = ratelimit.SignInLimiter(clock)
    for _ in range(ratelimit.MAX_FAILURES_PER_CLIENT * 3):
        assert limiter.admit("192.0.2.1") == 0
        limiter.succeeded("192.0.2.1")
    for _ in range(ratelimit.MAX_FAILURES_PER_CLIENT):
        assert limiter.admit("192.0.2.1") == 0
    assert limiter.admit("192.0.2.1") > 0


# -- headers ---------------------------------------------------------------------------------


def test_every_page_sends_a_strict_policy_and_no_script(client) -> None:
    for path in ("/ui/", "/ui/certs", "/ui/verdicts", "/ui/address/a@example.org", "/ui/login"):
        answer = client.get(path, follow_redirects=True)
        assert answer.status_code == 200, path
        assert answer.headers["Content-Security-Policy"] == CSP
        assert "script-src" not in CSP and "unsafe-inline" not in CSP
        assert answer.headers["X-Frame-Options"] == "DENY"
        assert answer.headers["Cache-Control"] == "no-store"
        html = answer.get_data(as_text=True)
        assert "<script" not in html and " style=" not in html and " on" not in html.lower()


# -- what the pages show ---------------------------------------------------------------------


def test_dashboard_counts(app, client, mail) -> None:
    raws = [mail.signed("alice@example.org"), mail.signed("bob@example.org")]
    raws.append(mail.signed("carol@example.org", from_header="mallory@example.org"))
    assert post_batch(app.test_client(), [relay_event(r) for r in raws]).status_code == 200
    store = store_of(app)
    week_ago = datetime.now(UTC) - timedelta(days=3)
    store.record(JournalEntry(week_ago, "rejected", "expired", "old@example.org"))
    store.record(JournalEntry(week_ago - timedelta(days=5), "rejected", "expired", "x@y.org"))
    soon = pki.make_leaf(mail.root, "dora@example.org", key_type="ec")
    assert store.save("dora@example.org", soon.cert).changed
    page = text_of(client.get("/ui/"))
    assert "3 certificates stored" in page
    assert "0 expiring within 30 days" in page
    assert "stored ok 2 2" in page
    assert "rejected email-mismatch 1 1" in page
    assert "rejected expired 0 1" in page  # 3 days ago: in the week, not in the day
    assert "all 3 4" in page  # the one 8 days ago is in neither


def test_dashboard_flags_expiring_and_expired(app, client, mail, clock) -> None:
    store = store_of(app)
    at = datetime.fromtimestamp(clock.now, UTC)
    for name, days in (("soon", 10), ("later", 60), ("gone", -2)):
        leaf = pki.make_leaf(
            mail.root,
            f"{name}@example.org",
            key_type="ec",
            not_before=at - timedelta(days=100),
            not_after=at + timedelta(days=days),
        )
        store.save(f"{name}@example.org", leaf.cert)
    page = text_of(client.get("/ui/"))
    assert "1 expiring within 30 days" in page and "1 already expired" in page
    listing = client.get("/ui/certs?expiring=1").get_data(as_text=True)
    assert "soon@example.org" in listing and "gone@example.org" in listing
    assert "later@example.org" not in listing
    rows = text_of(client.get("/ui/certs"))
    assert "expires in 9 days" in rows or "expires in 10 days" in rows
    assert "expired" in rows


def make_many(app, mail, count: int) -> list[str]:
    store = store_of(app)
    addresses = [f"user{n:03d}@example.org" for n in range(count)]
    for address in addresses:
        store.save(address, pki.make_leaf(mail.root, address, key_type="ec").cert)
    return addresses


def test_certificate_list_is_paged_and_searchable(app, client, mail) -> None:
    addresses = make_many(app, mail, PAGE_SIZE + 7)
    first = client.get("/ui/certs").get_data(as_text=True)
    assert f"{PAGE_SIZE + 7} certificates" in first
    assert addresses[0] in first and addresses[PAGE_SIZE - 1] in first
    assert addresses[PAGE_SIZE] not in first
    assert "page 1 of 2" in first
    second = client.get("/ui/certs?page=2").get_data(as_text=True)
    assert addresses[PAGE_SIZE] in second and addresses[0] not in second
    found = client.get("/ui/certs?q=USER042").get_data(as_text=True)
    assert "1 certificate matching" in unescape(found) and "user042@example.org" in found
    issuer = client.get("/ui/certs?q=Mail+Factory").get_data(as_text=True)
    assert f"{PAGE_SIZE + 7} certificates matching" in unescape(issuer)
    cert = store_of(app).get("user007@example.org")
    sha = cert.fingerprint(cert.signature_hash_algorithm.__class__()).hex()
    by_hash = client.get(f"/ui/certs?q={sha[:16]}").get_data(as_text=True)
    assert "user007@example.org" in by_hash and "user008@example.org" not in by_hash


@pytest.mark.parametrize(
    ("query", "words"),
    [
        ("page=0", "page must be a whole number"),
        ("page=two", "page must be a whole number"),
        ("q=" + "x" * 300, "longer than 254 characters"),
    ],
)
def test_bad_list_queries_say_what_is_wrong(client, query, words) -> None:
    answer = client.get(f"/ui/certs?{query}")
    assert answer.status_code == 400
    assert words in text_of(answer)


def test_pem_download_is_the_stored_certificate(app, client, mail) -> None:
    raw = mail.signed("erin@example.org")
    assert post_batch(app.test_client(), [relay_event(raw)]).status_code == 200
    answer = client.get("/ui/pem/Erin@Example.org")
    assert answer.status_code == 200
    assert answer.headers["Content-Type"] == "application/pem-certificate-chain"
    assert answer.headers["Content-Disposition"] == 'attachment; filename="erin@example.org.pem"'
    cert = x509.load_pem_x509_certificate(answer.data)
    assert cert == mail.identity("erin@example.org").cert
    assert client.get("/ui/pem/nobody@example.org").status_code == 404


def test_address_page_shows_the_certificate_history_and_verdicts(app, client, mail) -> None:
    address = "frank@example.org"
    store = store_of(app)
    old = mail.leaf(address, datetime.now(UTC) - timedelta(days=30))
    new = mail.identity(address)
    client_post = app.test_client()
    post_batch(client_post, [relay_event(mail.signed(address, signer=old))])
    post_batch(client_post, [relay_event(mail.signed(address, signer=new))])
    post_batch(client_post, [relay_event(mail.signed(address, signer=old))])  # older: refused
    page = text_of(client.get(f"/ui/address/{address}"))
    current = store.get(address)
    assert current == new.cert
    assert current.fingerprint(current.signature_hash_algorithm.__class__()).hex() in page
    refused, replaced = store.history(address)  # newest first
    assert (refused.event, replaced.event) == ("refused-older", "replaced")
    assert refused.sha256 == replaced.sha256 == old.cert.fingerprint(hashes.SHA256()).hex()
    assert replaced.sha256 in page and "refused-older" in page
    assert "rejected older-than-stored" in page
    assert Reason.OLDER_THAN_STORED.explanation in page
    assert page.count("stored ok") == 2


def test_a_rejected_message_appears_with_its_reason(app, client, mail) -> None:
    forged = mail.signed("grace@example.org", from_header="heidi@example.org")
    post_batch(app.test_client(), [relay_event(forged)])
    page = text_of(client.get("/ui/verdicts?q=heidi"))
    assert "heidi@example.org rejected" in page
    entry = store_of(app).verdicts("heidi").entries[0]
    assert entry.reason in page and entry.explanation in page and entry.detail in page
    html = client.get("/ui/verdicts?q=heidi").get_data(as_text=True)
    assert html.count("/ui/address/") == 1  # the search matched nothing else
    only_stored = text_of(client.get("/ui/verdicts?outcome=stored"))
    assert "heidi@example.org" not in only_stored
    assert client.get("/ui/verdicts?outcome=maybe").status_code == 400


def test_a_message_without_a_from_address_is_found_by_its_envelope_sender(app, client) -> None:
    post_batch(app.test_client(), [relay_event(b"not a message", msg_from="ivan@example.org")])
    page = text_of(client.get("/ui/verdicts?q=ivan"))
    assert "ivan@example.org (envelope) rejected malformed" in page


def test_verdicts_are_paged_newest_first(app, client) -> None:
    store = store_of(app)
    start = datetime.now(UTC) - timedelta(hours=2)
    for n in range(PAGE_SIZE + 3):
        at = start + timedelta(seconds=n)
        store.record(JournalEntry(at, "rejected", "not-signed", f"p{n:03d}@example.org"))
    first = client.get("/ui/verdicts").get_data(as_text=True)
    assert first.index("p052@") < first.index("p051@")  # newest first
    assert "p002@" not in first and 'rel="next"' in first
    second = client.get("/ui/verdicts?page=2").get_data(as_text=True)
    assert "p002@" in second and "p000@" in second and 'rel="next"' not in second


def test_page_text_is_escaped(app, client) -> None:
    store = store_of(app)
    store.record(
        JournalEntry(
            datetime.now(UTC),
            "rejected",
            "malformed",
            None,
            "<b>x</b>",
            "cli",
            None,
            "-",
            "<img src=x>@example.org",
        )
    )
    html = client.get("/ui/verdicts").get_data(as_text=True)
    assert "<img src=x>" not in html and "&lt;img src=x&gt;" in html
    assert "<b>x</b>" not in html


def test_pem_route_names_the_file_safely(app, client, mail, tmp_path: Path) -> None:
    address = 'o"brien@example.org'
    leaf = pki.make_leaf(mail.root, address, key_type="ec")
    store_of(app).save(address, leaf.cert)
    answer = client.get("/ui/pem/" + address)
    assert answer.headers["Content-Disposition"] == 'attachment; filename="o_brien@example.org.pem"'
    assert answer.data == leaf.cert.public_bytes(serialization.Encoding.PEM)


def test_a_short_ui_token_is_a_risk_check_config_names(tmp_path) -> None:
    short = Settings.from_mapping({"ui-token": "letmein"}, tmp_path)
    assert [key for key, _why in short.risks()] == ["x-messagesystems-webhook-token", "ui-token"]
    long_enough = Settings.from_mapping({"ui-token": UI_TOKEN}, tmp_path)
    assert "ui-token" not in dict(long_enough.risks())
