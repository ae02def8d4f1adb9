"""Every door under real gunicorn (two workers), and the Cloudflare Email Worker example run by
node against it: Bob's message stored through each, request metrics per route."""

from __future__ import annotations

import json
import shutil
import subprocess
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import write_ini
from tests.intakes import (
    TOPIC,
    basic,
    bob,
    eight_bit,
    mailgun_fields,
    multipart,
    postmark_json,
    sendgrid_fields,
    ses_notification,
    stored_fingerprint,
    urlencoded,
)
from tests.mailfactory import MailFactory
from tests.paths import REPO, SPARKY
from tests.servers import start_gunicorn

pytestmark = pytest.mark.slow
KEY, POSTMARK, SENDGRID, RAW = "mg-key", "pm:pass", "sg:pass", "raw-token"
WORKER = REPO / "contrib" / "cloudflare-email-worker.js"


@pytest.fixture
def serve(tmp_path, dns, https_server):
    servers = []

    def start(**values: str):
        ini = write_ini(
            tmp_path / "webapp.ini",
            {
                "user-certs-dir": "certs",
                "log-file": "webapp.log",
                "dns-nameservers": dns.nameserver,
                "dns-timeout": "2",
                "mailgun-signing-key": KEY,
                "postmark-basic-auth": POSTMARK,
                "sendgrid-basic-auth": SENDGRID,
                "raw-token": RAW,
                "ses-topic-arns": TOPIC,
                "ses-signing-cert-url-pattern": rf"^https://127\.0\.0\.1:{https_server.port}/.+\.pem$",
                "ses-ca-bundle": str(https_server.ca_file),
                **values,
            },
        )
        server = start_gunicorn(ini, tmp_path, workers=2)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


def post(url: str, body: bytes, content_type: str, headers: dict[str, str] | None = None):
    request = urllib.request.Request(
        url, data=body, method="POST", headers={"Content-Type": content_type, **(headers or {})}
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def test_every_door_under_gunicorn(serve, sns_signer, tmp_path) -> None:
    case = bob()
    server = serve(**case.settings)
    base = server.url.rstrip("/")
    requests = {
        "mailgun": (f"{base}/mailgun/mime", *multipart(mailgun_fields(case.raw, KEY)), {}),
        "mailgun-urlencoded": (f"{base}/mailgun/mime", *urlencoded(mailgun_fields(case.raw, KEY)), {}),
        "postmark": (f"{base}/postmark", json.dumps(postmark_json(case.raw)).encode(),
                     "application/json", basic(POSTMARK)),
        "sendgrid": (f"{base}/sendgrid", *multipart(sendgrid_fields(case.raw)), basic(SENDGRID)),
        "ses": (f"{base}/ses", json.dumps(sns_signer.sign(ses_notification(case.raw))).encode(),
                "text/plain; charset=UTF-8", {}),
        "raw": (f"{base}/raw", case.raw, "message/rfc822", {"Authorization": f"Bearer {RAW}"}),
    }  # fmt: skip
    for name, (url, body, content_type, headers) in requests.items():
        status, answer = post(url, body, content_type, headers)
        assert status == 200, (name, answer)
    assert stored_fingerprint(tmp_path / "certs", case.email) == case.fingerprint
    log = (tmp_path / "webapp.log").read_text("utf-8")
    for intake in ("mailgun", "postmark", "sendgrid", "ses", "raw"):
        assert f"intake={intake}" in log, intake
    assert post(f"{base}/raw", case.raw, "message/rfc822")[0] == 401
    with urllib.request.urlopen(f"{base}/metrics", timeout=30) as answer:
        metrics = answer.read().decode()
    assert 'smime_requests_total{status="200"} 6.0' in metrics
    assert 'smime_requests_total{status="401"} 1.0' in metrics
    assert 'smime_messages_total{intake="sendgrid",outcome="unchanged",reason="ok"}' in metrics


def run_worker(url: str, message: Path) -> dict:
    node = shutil.which("node")
    if node is None:
        pytest.fail("node is not installed (make test needs it for newman too)")
    proc = subprocess.run(
        [node, str(REPO / "tests" / "cfworker.mjs"), str(WORKER), url, RAW, str(message)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_the_cloudflare_worker_stores_retries_and_rejects(serve, dns, tmp_path) -> None:
    case = bob()
    server = serve(**case.settings)
    url = server.url + "raw"
    message = tmp_path / "bob.eml"
    message.write_bytes(case.raw)
    dns.mode = "servfail"
    assert run_worker(url, message)["result"] == "threw"  # 503: the sending MTA retries
    dns.mode = "normal"
    assert stored_fingerprint(tmp_path / "certs", case.email) is None
    assert run_worker(url, message) == {"result": "accepted", "rejected": None}
    assert stored_fingerprint(tmp_path / "certs", case.email) == case.fingerprint
    rejected = run_worker(url, SPARKY / "signed-from-bob-no-dkim.eml")
    assert rejected == {"result": "accepted", "rejected": "dkim-missing: no certificate collected"}


def test_the_cloudflare_worker_carries_8bit_bytes(serve, dns_server, tmp_path) -> None:
    factory = MailFactory.create(dns_server, tmp_path)
    case = eight_bit(factory)
    server = serve(**case.settings)
    message = tmp_path / "8bit.eml"
    message.write_bytes(case.raw)
    assert run_worker(server.url + "raw", message) == {"result": "accepted", "rejected": None}
    assert stored_fingerprint(tmp_path / "certs", case.email) == case.fingerprint
