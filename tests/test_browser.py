"""The operator page in a real browser: headless Chromium against real gunicorn (2 workers).

The service judges real mail first (generated PKI, DKIM keys on the loopback DNS server): one
certificate stored, one expiring in ten days, one forged message rejected. Then a person signs
in, searches, downloads a PEM, looks up why a message was refused, and sees the expiring
certificate flagged, with JavaScript on and off, and without a single console error. A page on
another site tries to post a form to ours and is refused.

``UPDATE_SCREENSHOTS=1`` writes the README's screenshots (``docs/screenshots/``) from this run.
"""

from __future__ import annotations

import http.server
import json
import os
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from playwright.sync_api import Browser, ConsoleMessage, Page, expect, sync_playwright

from smime_collector.ui import ratelimit
from tests import pki
from tests.browser import FLAGS, chromium_path
from tests.conftest import write_ini
from tests.helpers import TOKEN_HEADER, relay_event
from tests.mailfactory import MailFactory
from tests.paths import REPO
from tests.servers import Gunicorn, free_port, start_gunicorn
from tests.test_operations import call, workers_serving

pytestmark = pytest.mark.slow

UI_TOKEN = "browser-test-token-7f3a9c2e51"
WEBHOOK_TOKEN = "relay-secret"
SCREENSHOTS = REPO / "docs" / "screenshots"


@dataclass
class Service:
    server: Gunicorn
    folder: Path
    mail: MailFactory
    expiring: x509.Certificate

    @property
    def ui(self) -> str:
        return self.server.url + "ui/"


@pytest.fixture(scope="module")
def service(dns_server, tmp_path_factory) -> Iterator[Service]:
    folder = tmp_path_factory.mktemp("browser")
    mail = MailFactory.create(dns_server, folder)
    ini = write_ini(
        folder / "webapp.ini",
        {
            "x-messagesystems-webhook-token": WEBHOOK_TOKEN,
            "user-certs-dir": "certs",
            "log-file": "webapp.log",
            "trusted-certs": str(mail.ca_file),
            "dns-nameservers": dns_server.nameserver,
            "dns-timeout": "2",
            "ui-token": UI_TOKEN,
        },
    )
    access = ("--access-logformat", '%(p)s %(s)s "%(r)s"')
    server = start_gunicorn(ini, folder, workers=2, extra=access)
    now = datetime.now(UTC)
    soon = pki.make_leaf(
        mail.root,
        "carol@example.org",
        not_before=now - timedelta(days=355),
        not_after=now + timedelta(days=10, hours=1),
    )
    messages = [
        mail.signed("alice@example.org"),
        mail.signed("bob@example.net"),
        mail.signed("carol@example.org", signer=soon),
        mail.signed("mallory@example.org", from_header="alice@example.org"),  # forged
    ]
    body = json.dumps([relay_event(raw) for raw in messages]).encode()
    headers = {"Content-Type": "application/json", TOKEN_HEADER: WEBHOOK_TOKEN}
    answer = call(server, "/", method="POST", body=body, headers=headers)
    assert answer.status == 200, answer.body
    yield Service(server, folder, mail, soon.cert)
    server.stop()


@dataclass
class Watched:
    """Everything a page complained about: console errors, uncaught errors, failed loads."""

    errors: list[str] = field(default_factory=list)

    def attach(self, page: Page) -> None:
        page.on("console", self._console)
        page.on("pageerror", lambda exc: self.errors.append(f"page error: {exc}"))
        page.on("requestfailed", self._failed)
        page.on("response", self._response)

    def _console(self, message: ConsoleMessage) -> None:
        if message.type in ("error", "warning"):
            self.errors.append(f"console {message.type}: {message.text}")

    def _failed(self, request) -> None:
        if request.failure != "net::ERR_ABORTED":  # downloads end their navigation this way
            self.errors.append(f"failed: {request.url} {request.failure}")

    def _response(self, response) -> None:
        if response.status >= 500:
            self.errors.append(f"{response.status}: {response.url}")


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium_path(), args=FLAGS)
        yield browser
        browser.close()


@pytest.fixture
def watched() -> Watched:
    return Watched()


@pytest.fixture(params=[True, False], ids=["javascript-on", "javascript-off"])
def page(request, browser, watched) -> Iterator[Page]:
    context = browser.new_context(
        java_script_enabled=request.param,
        viewport={"width": 1280, "height": 860},
        accept_downloads=True,
    )
    page = context.new_page()
    watched.attach(page)
    yield page
    context.close()
    assert watched.errors == []  # no console errors, on every page every test visited


def sign_in(page: Page, service: Service, token: str = UI_TOKEN) -> None:
    page.goto(service.ui)
    expect(page).to_have_title("Sign in · smime-collector")
    page.get_by_label("Token").fill(token)
    page.get_by_role("button", name="Sign in").click()


def test_sign_in_refuses_a_wrong_token_then_takes_the_right_one(page, service) -> None:
    sign_in(page, service, token="not-the-token")
    expect(page.get_by_role("alert")).to_have_text("Wrong token.")
    expect(page).to_have_title("Sign in · smime-collector")
    page.get_by_label("Token").fill(UI_TOKEN)
    page.get_by_role("button", name="Sign in").click()
    expect(page).to_have_title("Dashboard · smime-collector")
    expect(page.locator("#stored")).to_have_text("3")
    expect(page.locator("#expiring")).to_have_text("1")
    shoot(page, "dashboard")


def test_search_finds_one_address(page, service) -> None:
    sign_in(page, service)
    page.get_by_role("navigation").get_by_role("link", name="Certificates").click()
    expect(page.locator("#certificates tbody tr")).to_have_count(3)
    page.get_by_label("Address, issuer or SHA-256").fill("example.net")
    page.get_by_role("button", name="Search").click()
    rows = page.locator("#certificates tbody tr")
    expect(rows).to_have_count(1)
    expect(rows.first).to_contain_text("bob@example.net")
    assert "q=example.net" in page.url


def test_pem_download_is_the_stored_certificate(page, service, tmp_path) -> None:
    sign_in(page, service)
    page.goto(service.ui + "certs?q=alice")
    with page.expect_download() as download:
        page.locator("#certificates").get_by_role("link", name="PEM").click()
    saved = tmp_path / download.value.suggested_filename
    download.value.save_as(saved)
    assert saved.name == "alice@example.org.pem"
    stored = (service.folder / "certs" / "alice@example.org.crt").read_bytes()
    assert saved.read_bytes() == stored
    assert (
        x509.load_pem_x509_certificate(saved.read_bytes())
        == service.mail.identity("alice@example.org").cert
    )


def test_a_rejected_message_appears_with_its_reason(page, service) -> None:
    sign_in(page, service)
    page.get_by_role("navigation").get_by_role("link", name="Recent verdicts").click()
    page.get_by_label("Outcome").select_option("rejected")
    page.get_by_role("button", name="Search").click()
    row = page.locator("#verdicts tbody tr")
    expect(row).to_have_count(1)
    expect(row).to_contain_text("alice@example.org")
    expect(row).to_contain_text("email-mismatch")
    expect(row).to_contain_text("The certificate is for an address other than the From: address.")
    expect(row).to_contain_text("mallory@example.org")  # the detail says whose certificate it was
    shoot(page, "verdicts")


def test_an_expiring_certificate_is_flagged(page, service) -> None:
    sign_in(page, service)
    page.get_by_role("navigation").get_by_role("link", name="Certificates").click()
    row = page.locator("#certificates tbody tr", has_text="carol@example.org")
    expect(row).to_have_class("expiring")
    expect(row.locator(".badge")).to_have_text("expires in 10 days")
    for other in ("alice@example.org", "bob@example.net"):
        expect(
            page.locator("#certificates tbody tr", has_text=other).locator(".badge")
        ).to_have_count(0)
    shoot(page, "certificates")
    row.get_by_role("link", name="carol@example.org").click()
    expect(page.locator("#current")).to_contain_text("expires in 10 days")
    expect(page.locator("#verdicts")).to_contain_text("stored")


def test_sign_out_ends_the_session(page, service) -> None:
    sign_in(page, service)
    page.get_by_role("button", name="Sign out").click()
    expect(page).to_have_title("Sign in · smime-collector")
    page.goto(service.ui + "certs")
    expect(page).to_have_title("Sign in · smime-collector")


class _Attacker(http.server.BaseHTTPRequestHandler):
    """Another site, with a form that posts to the operator page."""

    target = ""

    def do_GET(self) -> None:
        body = (
            "<!doctype html><title>win a prize</title>"
            f'<form method="post" action="{self.target}">'
            '<input type="hidden" name="csrf_token" value="guessed">'
            '<button type="submit">Claim</button></form>'
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


def test_posts_without_our_form_token_are_refused(browser, service, watched) -> None:
    context = browser.new_context()
    page = context.new_page()
    sign_in(page, service)
    expect(page).to_have_title("Dashboard · smime-collector")
    # A post carrying the session cookie but no form token: refused, session intact.
    refused = context.request.post(service.ui + "logout", form={"x": "1"})
    assert refused.status == 403
    assert "did not come from this page" in refused.text()
    # A form on another site (localhost is another site than 127.0.0.1) posting to ours.
    _Attacker.target = service.ui + "logout"
    attacker = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), _Attacker)
    thread = threading.Thread(target=attacker.serve_forever, daemon=True)
    thread.start()
    try:
        evil = context.new_page()
        evil.goto(f"http://localhost:{attacker.server_address[1]}/")
        with evil.expect_response(service.ui + "logout") as answer:
            evil.get_by_role("button", name="Claim").click()
        assert answer.value.status == 403
    finally:
        attacker.shutdown()
        attacker.server_close()
    page.reload()
    expect(page).to_have_title("Dashboard · smime-collector")  # still signed in
    context.close()


def test_sign_in_attempts_are_limited_across_workers(service, tmp_path) -> None:
    """Wrong tokens from several connections at once, so both workers answer: the limit is
    one count for both, exact even when they answer at the same moment. A server of its own,
    so no other test's attempts have counted yet."""
    access = ("--access-logformat", '%(p)s %(s)s "%(r)s"')
    server = start_gunicorn(service.folder / "webapp.ini", tmp_path, workers=2, extra=access)
    try:
        both_workers_up(server, tmp_path / "access.log")
        form_page = call(server, "/ui/login")
        cookie = form_page.headers["set-cookie"].split(";")[0]
        csrf = form_page.body.decode().split('name="csrf_token" value="')[1].split('"')[0]
        headers = {"Cookie": cookie, "Content-Type": "application/x-www-form-urlencoded"}
        body = f"csrf_token={csrf}&token=wrong".encode()
        with ThreadPoolExecutor(max_workers=6) as pool:
            answers = list(
                pool.map(
                    lambda _: call(server, "/ui/login", method="POST", body=body, headers=headers),
                    range(30),
                )
            )
    finally:
        server.stop()
    wrong = [a for a in answers if a.status == 200 and b"Wrong token." in a.body]
    limited = [a for a in answers if a.status == 429]
    assert (len(wrong), len(limited)) == (ratelimit.MAX_FAILURES_PER_CLIENT, 20)
    served = workers_serving(tmp_path / "access.log", "POST", "/ui/login")
    assert len(served) == 2, f"one worker answered every attempt: {served}"


def both_workers_up(server: Gunicorn, access_log: Path) -> None:
    """gunicorn answers as soon as one worker is up: ask until both have answered."""
    deadline = time.monotonic() + 30
    with ThreadPoolExecutor(max_workers=4) as pool:
        while len(workers_serving(access_log, "GET", "/healthz")) < 2:
            assert time.monotonic() < deadline, "the second worker never answered"
            list(pool.map(lambda _: call(server, "/healthz"), range(8)))


def shoot(page: Page, name: str) -> None:
    """A screenshot of what the test sees; into the README's folder when asked to."""
    if page.context.pages and os.environ.get("UPDATE_SCREENSHOTS") == "1":
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)
    else:
        assert page.screenshot(full_page=True).startswith(b"\x89PNG")
