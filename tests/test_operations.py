"""Operations through real gunicorn (2 workers): /healthz, /metrics, /certs; and --check-config.

Every HTTP test talks to ``gunicorn -c gunicorn.conf.py webapp:app`` over a socket with
``http.client``, as a monitoring system or the sending side would.
"""

from __future__ import annotations

import importlib.metadata
import json
import re
import shutil
import time
import warnings
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.client import HTTPConnection
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.utils import CryptographyDeprecationWarning
from prometheus_client.parser import text_string_to_metric_families

import smime_collector
from smime_collector.resources import SHIPPED_BUNDLE
from tests import pki
from tests.conftest import write_ini
from tests.corpus import sparky_rows
from tests.helpers import TOKEN_HEADER, relay_event, run_cli, sha256_of_pem, visible_files
from tests.servers import Gunicorn, start_gunicorn

pytestmark = pytest.mark.slow

ROWS = {row.name: row for row in sparky_rows()}
BOB = ROWS["signed-from-bob.eml"]
BOB_TIME = "2018-11-22T15:09:16Z"
WEBHOOK_TOKEN = "relay-secret"
METRICS_TOKEN = "metrics-secret"
LOOKUP_TOKEN = "lookup-secret"
# %(p)s is the worker's pid: it shows which worker served each request.
ACCESS_FORMAT = ("--access-logformat", '%(p)s %(s)s "%(r)s"')
ACCESS_LINE = re.compile(r'^<(\d+)> (\d{3}) "(\w+) (\S+) ')
PEM_TYPE = "application/pem-certificate-chain"


# -- plumbing --------------------------------------------------------------------------------


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes

    @property
    def content_type(self) -> str:
        return self.headers.get("content-type", "")

    def json(self):
        assert self.content_type == "application/json", self.content_type
        return json.loads(self.body)


def call(
    server: Gunicorn,
    path: str,
    *,
    method: str = "GET",
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> Answer:
    """One request over a fresh connection; ``path`` is sent exactly as given."""
    url = urlsplit(server.url)
    conn = HTTPConnection(url.hostname, url.port, timeout=30)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        return Answer(
            response.status,
            {k.lower(): v for k, v in response.getheaders()},
            response.read(),
        )
    finally:
        conn.close()


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def relay(server: Gunicorn, raws: list[bytes], token: str = WEBHOOK_TOKEN) -> Answer:
    body = json.dumps([relay_event(raw) for raw in raws]).encode()
    headers = {"Content-Type": "application/json", TOKEN_HEADER: token}
    return call(server, "/", method="POST", body=body, headers=headers)


def read_bundle(path: Path) -> list[x509.Certificate]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CryptographyDeprecationWarning)  # serial-0 roots
        return x509.load_pem_x509_certificates(path.read_bytes())


StartService = Callable[..., Gunicorn]


def start_in(folder: Path, nameserver: str, **overrides: str) -> Gunicorn:
    """gunicorn (2 workers) on an INI in ``folder``, paths relative to it, pids in the access log."""
    values = {
        "x-messagesystems-webhook-token": WEBHOOK_TOKEN,
        "user-certs-dir": "certs",
        "log-file": "webapp.log",
        "dns-nameservers": nameserver,
        "dns-timeout": "2",
        "verify-time": BOB_TIME,
    }
    values.update({key.replace("_", "-"): value for key, value in overrides.items()})
    ini = write_ini(folder / "webapp.ini", values)
    return start_gunicorn(ini, folder, workers=2, extra=ACCESS_FORMAT)


@pytest.fixture
def start_service(tmp_path: Path, dns) -> Iterator[StartService]:
    """Start gunicorn in ``tmp_path``; every server started is stopped after the test."""
    started: list[Gunicorn] = []

    def start(**overrides: str) -> Gunicorn:
        started.append(start_in(tmp_path, dns.nameserver, **overrides))
        return started[-1]

    yield start
    for server in started:
        server.stop()


# -- /healthz --------------------------------------------------------------------------------


def test_healthz_reports_anchors_folder_and_version(start_service, tmp_path) -> None:
    server = start_service()
    answer = call(server, "/healthz")
    assert answer.status == 200
    anchors = len(read_bundle(SHIPPED_BUNDLE))
    version = importlib.metadata.version("smime-collector")  # what pip installed
    assert answer.json() == {
        "status": "ok",
        "version": version,
        "trust_anchors": anchors,
        "store": "folder",
        "store_ok": True,
    }
    assert anchors > 100  # the shipped Mozilla email bundle, not an empty or test bundle


def test_healthz_counts_every_configured_bundle(start_service, tmp_path) -> None:
    extra = tmp_path / "private-ca.pem"
    extra.write_bytes(pki.make_root("Private CA one").cert_pem() + pki.make_root("two").cert_pem())
    server = start_service(trusted_certs=f"{SHIPPED_BUNDLE}, private-ca.pem")
    expected = len(read_bundle(SHIPPED_BUNDLE)) + 2
    assert call(server, "/healthz").json()["trust_anchors"] == expected


def test_healthz_is_503_naming_the_folder_when_it_cannot_be_written(
    start_service, tmp_path
) -> None:
    """We run as root, so chmod does not stop writes: put a regular FILE where the folder was.

    The workers created ``certs/`` at start-up; replacing it by a file makes the probe's
    ``mkdir(exist_ok=True)`` fail (FileExistsError), exactly as a real write would fail.
    """
    server = start_service()
    certs = tmp_path / "certs"
    assert certs.is_dir()
    relay(server, [BOB.raw])  # a stored address must not leak into /healthz
    assert (certs / f"{BOB.email}.crt").is_file()
    moved = tmp_path / "certs.moved"
    certs.rename(moved)
    certs.write_bytes(b"a file where the certificate folder should be\n")
    for _ in range(6):  # each worker probes for itself: ask several times
        answer = call(server, "/healthz")
        assert answer.status == 503
        body = answer.json()
        assert body["status"] == "fail"
        assert body["failing"] == ["store"]
        assert body["store_ok"] is False
        assert body["trust_anchors"] > 0
        text = answer.body.decode()
        assert "@" not in text and str(tmp_path) not in text and "certs.moved" not in text
    # The probe says what a real write meets: storing a certificate now is a tempfail too.
    assert relay(server, [BOB.raw]).status == 503
    certs.unlink()
    moved.rename(certs)
    answer = call(server, "/healthz")
    assert answer.status == 200 and answer.json()["status"] == "ok"


def test_healthz_needs_no_token(start_service) -> None:
    server = start_service(metrics_token=METRICS_TOKEN, lookup_token=LOOKUP_TOKEN)
    assert call(server, "/healthz").status == 200
    assert call(server, "/healthz", headers=bearer("wrong")).status == 200


# -- /metrics --------------------------------------------------------------------------------


def scrape(server: Gunicorn, token: str | None = METRICS_TOKEN) -> dict[tuple, float]:
    """``{(sample name, sorted label items): value}`` from the Prometheus text format."""
    answer = call(server, "/metrics", headers=bearer(token) if token else {})
    assert answer.status == 200, answer.body
    assert answer.content_type.startswith("text/plain; version="), answer.content_type
    values = {}
    for family in text_string_to_metric_families(answer.body.decode()):
        for sample in family.samples:
            values[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return values


def by_label(values: dict[tuple, float], name: str, *labels: str) -> dict:
    """The samples of ``name`` keyed by the values of ``labels`` (zeros left out)."""
    found = {}
    for (sample, items), value in values.items():
        if sample == name and value:
            got = dict(items)
            key = tuple(got[label] for label in labels)
            found[key[0] if len(key) == 1 else key] = value
    return found


def test_metrics_token_is_required_when_configured(start_service) -> None:
    server = start_service(metrics_token=METRICS_TOKEN)
    for headers in ({}, bearer("wrong"), {"Authorization": f"Basic {METRICS_TOKEN}"}):
        answer = call(server, "/metrics", headers=headers)
        assert answer.status == 401
        assert answer.headers.get("www-authenticate") == "Bearer"
        assert "Bearer" in answer.json()["message"]
        assert b"smime_" not in answer.body
    lower_scheme = call(server, "/metrics", headers={"Authorization": f"bearer {METRICS_TOKEN}"})
    assert lower_scheme.status == 200  # the auth scheme is case-insensitive (RFC 9110)
    assert b"# TYPE smime_dkim_dns_lookups_total counter" in lower_scheme.body


@dataclass
class Expected:
    """What the service should have counted, built up request by request."""

    requests: Counter = field(default_factory=Counter)  # status -> n
    messages: Counter = field(default_factory=Counter)  # (outcome, reason) -> n
    stages: Counter = field(default_factory=Counter)  # stage -> n
    dkim_checks: int = 0  # DKIM key fetches asked of the resolver (DNS or cache)
    bob_good: int = 0  # Bob's good message judged with DNS working


# What each kind of message costs: its verdict (None: Bob, stored once then unchanged), the
# stages it passes through, and whether it asks the resolver for a DKIM key.
FULL = ("parse", "dkim", "cms", "chain", "store")
MESSAGES = {
    "bob": (None, FULL, True),
    "no-dkim": (("rejected", "dkim-missing"), ("parse", "dkim"), False),
    "bad-dkim": (("rejected", "dkim-invalid"), ("parse", "dkim"), True),
    "corrupt": (("rejected", "bad-signature"), ("parse", "dkim", "cms"), True),
    "fake-p7s": (("rejected", "not-signed"), ("parse",), False),
    "unsigned": (("rejected", "not-signed"), ("parse",), False),
    "junk": (("rejected", "malformed"), ("parse",), False),
}
RAW = {
    "bob": BOB.raw,
    "no-dkim": ROWS["signed-from-bob-no-dkim.eml"].raw,
    "bad-dkim": ROWS["signed-from-bob-bad-dkim.eml"].raw,
    "corrupt": ROWS["from-bob-corrupt-signature.eml"].raw,
    "fake-p7s": ROWS["from-bob-attachment-not-sig.eml"].raw,
    "unsigned": ROWS["declaration.eml"].raw,
    "junk": b"this is not an email at all",
}
JSON = {"Content-Type": "application/json", TOKEN_HEADER: WEBHOOK_TOKEN}


@dataclass(frozen=True)
class Post:
    body: bytes
    headers: dict[str, str]
    status: int
    kinds: tuple[str, ...] = ()  # messages judged (a 400 or 401 judges none)


def batch(*kinds: str) -> Post:
    body = json.dumps([relay_event(RAW[kind]) for kind in kinds]).encode()
    return Post(body, JSON, 200, kinds)


ROUND = (
    batch("bob"),
    batch("no-dkim", "bad-dkim"),
    batch("corrupt"),
    batch("fake-p7s", "unsigned", "junk"),
    batch("bob"),
    batch(),  # an empty batch is a fine request with no message
    Post(b"[]", {**JSON, TOKEN_HEADER: "wrong"}, 401),
    Post(b"[{", JSON, 400),
    Post(b'[{"msys": {}}]', JSON, 400),
    Post(b"[]", {"Content-Type": "text/plain", TOKEN_HEADER: WEBHOOK_TOKEN}, 400),
)


def send(server: Gunicorn, post: Post, expected: Expected, dns_works: bool = True) -> None:
    answer = call(server, "/", method="POST", body=post.body, headers=post.headers)
    status = post.status if dns_works else 503
    assert answer.status == status, answer.body
    expected.requests[str(status)] += 1
    for kind in post.kinds:
        verdict, stages, asks_dns = MESSAGES[kind]
        if not dns_works:  # every DKIM check fails: tempfail, nothing after the DKIM stage
            assert asks_dns
            verdict, stages = ("tempfail", "dns-error"), ("parse", "dkim")
        elif verdict is None:
            expected.bob_good += 1
        if verdict:
            expected.messages[verdict] += 1
        expected.stages.update(stages)
        expected.dkim_checks += asks_dns


def workers_serving(access_log: Path, method: str, path: str) -> Counter:
    """pid -> number of ``method path`` requests it served, from the access log."""
    pids = Counter()
    for line in access_log.read_text().splitlines():
        match = ACCESS_LINE.match(line)
        if match and match[3] == method and match[4] == path:
            pids[int(match[1])] += 1
    return pids


def test_metrics_add_up_over_both_workers(start_service, tmp_path, dns) -> None:
    server = start_service(metrics_token=METRICS_TOKEN)
    udp_before = dns.queries - dns.tcp_queries
    first = scrape(server)
    assert by_label(first, "smime_messages_total", "outcome", "reason") == {}
    assert by_label(first, "smime_requests_total", "status") == {}
    assert first[("smime_request_seconds_count", ())] == 0
    assert first[("smime_certificates_stored_total", ())] == 0
    expected = Expected()

    # DNS failing first, before any worker has the key cached: tempfail, 503, nothing stored.
    dns.mode = "servfail"
    for _ in range(3):
        send(server, batch("bob"), expected, dns_works=False)
    assert visible_files(tmp_path / "certs") == []
    dns.mode = "normal"

    # Then rounds of mixed requests, 4 at a time, until both workers have served relay posts.
    access_log = tmp_path / "access.log"
    with ThreadPoolExecutor(max_workers=4) as pool:
        for _ in range(8):
            list(pool.map(lambda post: send(server, post, expected), ROUND * 2))
            if len(workers_serving(access_log, "POST", "/")) == 2:
                break
    # A worker writes its access line just after answering: give the last ones a moment.
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        served = workers_serving(access_log, "POST", "/")
        if sum(served.values()) >= sum(expected.requests.values()):
            break
        time.sleep(0.05)
    assert len(served) == 2, f"one worker served every request: {served}"
    assert server.process.pid not in served  # the master never serves
    assert sum(served.values()) == sum(expected.requests.values())

    expected.messages["stored", "ok"] += 1
    expected.messages["unchanged", "ok"] += expected.bob_good - 1
    values = scrape(server)

    assert by_label(values, "smime_messages_total", "outcome", "reason") == expected.messages
    assert by_label(values, "smime_requests_total", "status") == expected.requests
    requests = sum(expected.requests.values())
    assert values[("smime_request_seconds_count", ())] == requests
    assert values[("smime_request_seconds_bucket", (("le", "+Inf"),))] == requests
    assert values[("smime_request_seconds_sum", ())] > 0
    buckets = sorted(
        (float(dict(items)["le"]), value)
        for (name, items), value in values.items()
        if name == "smime_request_seconds_bucket"
    )
    assert [v for _, v in buckets] == sorted(v for _, v in buckets)  # cumulative
    assert by_label(values, "smime_stage_seconds_count", "stage") == expected.stages
    for stage, count in expected.stages.items():
        inf = values[("smime_stage_seconds_bucket", (("le", "+Inf"), ("stage", stage)))]
        assert inf == count
    assert values[("smime_certificates_stored_total", ())] == 1
    # The conventional names count the same as the deprecated ones they replace.
    assert by_label(values, "smime_request_duration_seconds_count", "code") == expected.requests
    assert by_label(values, "smime_stage_duration_seconds_count", "stage") == expected.stages
    assert values[("smime_certificate_writes_total", ())] == 1
    # Read from the store at scrape time: one certificate, Bob's, and its expiry.
    bob = x509.load_pem_x509_certificate((tmp_path / "certs" / f"{BOB.email}.crt").read_bytes())
    assert values[("smime_certificates_stored", ())] == 1
    expiry = values[("smime_certificate_earliest_expiry_timestamp_seconds", ())]
    assert expiry == bob.not_valid_after_utc.timestamp()
    assert values[("smime_build_info", (("version", smime_collector.__version__),))] == 1
    # Every DKIM check asked the resolver once: a DNS query or a per-worker cache hit.
    lookups = values[("smime_dkim_dns_lookups_total", ())]
    hits = values[("smime_dkim_dns_cache_hits_total", ())]
    assert lookups == dns.queries - dns.tcp_queries - udp_before  # what the DNS server saw
    assert lookups + hits == expected.dkim_checks
    assert 3 < lookups <= 3 + 2  # the 3 failures, then at most one fetch per worker
    # The accesses to /metrics and /healthz are not relay requests and were not counted.
    call(server, "/healthz")
    call(server, "/metrics")  # 401
    again = scrape(server)
    assert by_label(again, "smime_requests_total", "status") == expected.requests
    assert again[("smime_request_seconds_count", ())] == requests
    assert by_label(again, "smime_request_duration_seconds_count", "code") == expected.requests
    assert visible_files(tmp_path / "certs") == [f"{BOB.email}.crt"]


def test_metrics_survive_an_empty_worker_file(start_service, tmp_path, monkeypatch) -> None:
    """prometheus_client creates a worker's file before sizing it; a worker killed in that
    moment leaves an empty file behind for good. It must not break every later scrape.

    Also covers an operator-named PROMETHEUS_MULTIPROC_DIR (gunicorn.conf.py then keeps it).
    """
    folder = tmp_path / "prometheus"
    folder.mkdir()
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(folder))
    server = start_service(metrics_token=METRICS_TOKEN)
    assert relay(server, [BOB.raw]).status == 200
    (folder / "counter_4194305.db").write_bytes(b"")  # no such pid: a dead worker's file
    (folder / "histogram_4194305.db").write_bytes(b"")
    for _ in range(4):
        values = scrape(server)
        assert by_label(values, "smime_messages_total", "outcome", "reason") == {
            ("stored", "ok"): 1
        }
        assert values[("smime_request_seconds_count", ())] == 1
    pids = {path.stem.rpartition("_")[2] for path in folder.glob("counter_*.db")}
    assert len(pids) >= 2  # the dead one and the worker that judged the message
    server.stop()
    assert (folder / "counter_4194305.db").exists()  # not ours to delete


def test_metrics_are_open_without_a_metrics_token(start_service) -> None:
    server = start_service()
    assert relay(server, [BOB.raw]).status == 200
    values = scrape(server, token=None)
    assert by_label(values, "smime_messages_total", "outcome", "reason") == {("stored", "ok"): 1}
    assert by_label(values, "smime_requests_total", "status") == {"200": 1}
    assert values[("smime_certificates_stored_total", ())] == 1


# -- /certs ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def lookup_service(
    tmp_path_factory, dns_server
) -> Iterator[tuple[Gunicorn, dict[str, x509.Certificate]]]:
    """A service with lookup-token, Bob stored through the relay, and two generated certs.

    Carol's certificate expires in 10 days, Dave's in a year, Bob's expired in 2019. The folder
    also holds what a reader must never see: dot files, a damaged file, a symlink out.
    Shared by the read-only tests below (they post nothing).
    """
    tmp_path = tmp_path_factory.mktemp("lookup")
    root = pki.make_root("Lookup Test Root")
    now = datetime.now(UTC)
    carol = pki.make_leaf(root, "carol@example.org", not_after=now + timedelta(days=10))
    dave = pki.make_leaf(root, "dave@example.org", not_after=now + timedelta(days=365))
    certs = tmp_path / "certs"
    certs.mkdir()
    (certs / "carol@example.org.crt").write_bytes(carol.cert_pem())
    (certs / "dave@example.org.crt").write_bytes(dave.cert_pem())
    (certs / ".tmp-half-written.crt").write_bytes(dave.cert_pem())
    (certs / "damaged@example.org.crt").write_bytes(b"-----BEGIN CERTIFICATE-----\nAAAA\n")
    (certs / "notes.txt").write_text("not a certificate\n")
    outside = pki.make_leaf(root, "eve@example.org")
    (tmp_path / "eve@example.org.pem").write_bytes(outside.cert_pem())
    (tmp_path / "outside.crt").write_bytes(outside.cert_pem())
    (certs / "eve@example.org.crt").symlink_to(tmp_path / "eve@example.org.pem")
    server = start_in(tmp_path, dns_server.nameserver, lookup_token=LOOKUP_TOKEN)
    try:
        assert relay(server, [BOB.raw]).status == 200
        bob = x509.load_pem_x509_certificate((certs / f"{BOB.email}.crt").read_bytes())
        assert sha256_of_pem(certs / f"{BOB.email}.crt") == BOB.fingerprint
        yield (
            server,
            {BOB.email: bob, "carol@example.org": carol.cert, "dave@example.org": dave.cert},
        )
    finally:
        server.stop()


def entry(email: str, cert: x509.Certificate) -> dict[str, str]:
    return {
        "email": email,
        "issuer": cert.issuer.rfc4514_string(),
        "not_after": cert.not_valid_after_utc.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "sha256": cert.fingerprint(hashes.SHA256()).hex(),
    }


def test_certs_one_address_returns_the_stored_pem(lookup_service) -> None:
    server, stored = lookup_service
    for asked, email in [
        (BOB.email, BOB.email),
        ("Bob.Lumreeker@GMAIL.com", BOB.email),  # case-insensitive, like the store
        ("CAROL@example.org", "carol@example.org"),
        ("dave%40example.org", "dave@example.org"),  # percent-encoded @
    ]:
        answer = call(server, f"/certs/{asked}", headers=bearer(LOOKUP_TOKEN))
        assert answer.status == 200, asked
        assert answer.content_type == PEM_TYPE
        certs = x509.load_pem_x509_certificates(answer.body)
        assert certs == [stored[email]]
    bob = call(server, f"/certs/{BOB.email}", headers=bearer(LOOKUP_TOKEN))
    assert (
        x509.load_pem_x509_certificate(bob.body).fingerprint(hashes.SHA256()).hex()
        == BOB.fingerprint
    )


@pytest.mark.parametrize(
    "path",
    [
        "/certs/nobody@example.org",
        "/certs/damaged@example.org",  # unreadable file: never served
        "/certs/eve@example.org",  # a symlink planted in the folder: never followed
        "/certs/.tmp-half-written",  # service's own dot files
        "/certs/notes.txt",
        "/certs/../outside",  # outside.crt exists one level up
        "/certs/..%2foutside",
        "/certs/x/../../outside",
        "/certs/" + "a" * 240 + "@example.org",  # 252 characters: "<it>.crt" is too long
        "/certs/" + "%C3%A9" * 120 + "@example.org",  # 132 characters, 252 bytes in UTF-8
        "/certs/%00",
    ],
)
def test_certs_unknown_or_unsafe_address_is_404(lookup_service, path) -> None:
    server, _stored = lookup_service
    answer = call(server, path, headers=bearer(LOOKUP_TOKEN))
    assert answer.status == 404, answer.body
    assert answer.json() == {"message": "No certificate stored for this address"}


def test_certs_listing_json(lookup_service) -> None:
    server, stored = lookup_service
    answer = call(server, "/certs", headers=bearer(LOOKUP_TOKEN))
    assert answer.status == 200
    body = answer.json()
    assert body == {
        "certificates": [entry(email, stored[email]) for email in sorted(stored)],
        "count": 3,
    }


@pytest.mark.parametrize(
    ("window", "emails"),
    [
        ("30d", [BOB.email, "carol@example.org"]),  # Bob's expired in 2019: renew too
        ("30", [BOB.email, "carol@example.org"]),  # a bare number means days
        ("400d", [BOB.email, "carol@example.org", "dave@example.org"]),
        ("48h", [BOB.email]),
        ("90m", [BOB.email]),
    ],
)
def test_certs_expiring_within(lookup_service, window, emails) -> None:
    server, stored = lookup_service
    answer = call(server, f"/certs?expiring-within={window}", headers=bearer(LOOKUP_TOKEN))
    assert answer.status == 200
    assert answer.json() == {
        "certificates": [entry(email, stored[email]) for email in emails],
        "count": len(emails),
    }


@pytest.mark.parametrize("window", ["soon", "30x", "-3d", "", "1y"])
def test_certs_expiring_within_rejects_nonsense(lookup_service, window) -> None:
    server, _stored = lookup_service
    answer = call(server, f"/certs?expiring-within={window}", headers=bearer(LOOKUP_TOKEN))
    assert answer.status == 400
    assert "expiring-within" in answer.json()["message"]


@pytest.mark.parametrize("path", ["/certs", f"/certs/{BOB.email}", "/certs?expiring-within=30d"])
def test_certs_need_the_lookup_token(lookup_service, path) -> None:
    server, _stored = lookup_service
    for headers in (
        {},
        bearer("wrong"),
        bearer(METRICS_TOKEN),
        bearer(WEBHOOK_TOKEN),
        {"Authorization": LOOKUP_TOKEN},  # no scheme
        {"Authorization": f"Basic {LOOKUP_TOKEN}"},
        {TOKEN_HEADER: LOOKUP_TOKEN},
    ):
        answer = call(server, path, headers=headers)
        assert answer.status == 401, headers
        assert answer.headers.get("www-authenticate") == "Bearer"
        assert b"@" not in answer.body and b"BEGIN" not in answer.body
    assert call(server, path, headers=bearer(LOOKUP_TOKEN)).status == 200


def test_certs_routes_are_off_without_a_lookup_token(start_service, tmp_path) -> None:
    server = start_service()
    assert relay(server, [BOB.raw]).status == 200
    assert (tmp_path / "certs" / f"{BOB.email}.crt").is_file()
    for path in ("/certs", f"/certs/{BOB.email}", "/certs?expiring-within=30d"):
        for headers in ({}, bearer(""), bearer("anything")):
            answer = call(server, path, headers=headers)
            assert answer.status == 404
            assert answer.json() == {"message": "Not Found"}
            assert b"BEGIN" not in answer.body


# -- readSMIMEsig.py --check-config ----------------------------------------------------------


CHECK_LINE = re.compile(r"^(ok|FAIL|WARN) ([\w-]+): (.+)$")


def check_config(ini: Path, cwd: Path) -> tuple[int, dict[str, tuple[str, str]], str]:
    """Exit code, {check: (ok|FAIL, detail)} and the output; WARN lines are not checks."""
    proc = run_cli("--check-config", "--config", ini, cwd=cwd)
    lines = proc.stdout.splitlines()
    results = {}
    for line in lines:
        match = CHECK_LINE.match(line)
        assert match, f"not a check line: {line!r}"
        if match[1] == "WARN":
            continue
        assert match[2] not in results, f"two lines for {match[2]}"
        results[match[2]] = (match[1], match[3])
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc.returncode, results, proc.stdout


@pytest.fixture
def config_values(tmp_path, dns) -> dict[str, str]:
    return {
        "user-certs-dir": "certs",
        "log-file": "logs/webapp.log",
        "dns-nameservers": dns.nameserver,
        "dns-timeout": "1",
    }


KEYS = ["config", "trusted-certs", "store", "log-file", "dns-nameservers"]


def test_check_config_all_good(tmp_path, config_values, dns) -> None:
    ini = write_ini(tmp_path / "webapp.ini", config_values)
    before = dns.queries
    code, results, out = check_config(ini, tmp_path)
    assert code == 0, out
    assert list(results) == KEYS
    assert all(state == "ok" for state, _ in results.values()), out
    anchors = len(read_bundle(SHIPPED_BUNDLE))
    assert results["trusted-certs"][1] == f"{anchors} trust anchors loaded"
    assert dns.nameserver in results["dns-nameservers"][1]
    assert dns.queries > before  # it really asked the configured server
    assert (tmp_path / "certs").is_dir() and (tmp_path / "logs").is_dir()
    assert visible_files(tmp_path / "certs") == []  # the write probe cleaned up after itself


def _file_in_the_way(tmp_path: Path) -> str:
    blocker = tmp_path / "blocker"
    blocker.write_text("a regular file, so nothing can be created under it\n")
    return "blocker"


@pytest.mark.parametrize(
    ("change", "failing", "needle"),
    [
        ({"trusted-certs": "missing-bundle.pem"}, "trusted-certs", "missing-bundle.pem"),
        ({"trusted-certs": "webapp.ini"}, "trusted-certs", "webapp.ini"),  # not PEM
        ({"user-certs-dir": "{blocker}/certs"}, "store", "not writable"),
        ({"log-file": "{blocker}/webapp.log"}, "log-file", "not writable"),
        ({"log-file": "."}, "log-file", "not writable"),  # a folder, not a file
    ],
)
def test_check_config_names_the_one_broken_key(
    tmp_path, config_values, change, failing, needle
) -> None:
    blocker = _file_in_the_way(tmp_path)
    values = {**config_values, **{k: v.format(blocker=blocker) for k, v in change.items()}}
    code, results, out = check_config(write_ini(tmp_path / "webapp.ini", values), tmp_path)
    assert code == 2, out
    assert list(results) == KEYS
    assert [key for key, (state, _) in results.items() if state == "FAIL"] == [failing], out
    assert needle in results[failing][1]


def test_check_config_silent_nameserver_times_out(tmp_path, config_values, dns) -> None:
    dns.mode = "drop"
    values = {**config_values, "dns-timeout": "0.5"}
    started = time.monotonic()
    code, results, out = check_config(write_ini(tmp_path / "webapp.ini", values), tmp_path)
    assert time.monotonic() - started < 20
    assert code == 2, out
    state, detail = results["dns-nameservers"]
    assert state == "FAIL" and "timed out" in detail and dns.nameserver in detail
    assert [key for key, (s, _) in results.items() if s == "FAIL"] == ["dns-nameservers"]


def test_check_config_servfail_fails(tmp_path, config_values, dns) -> None:
    dns.mode = "servfail"
    code, results, out = check_config(write_ini(tmp_path / "webapp.ini", config_values), tmp_path)
    assert code == 2, out
    assert results["dns-nameservers"][0] == "FAIL"
    assert "SERVFAIL" in results["dns-nameservers"][1]


def test_check_config_reports_every_problem_one_line_each(tmp_path, config_values, dns) -> None:
    dns.mode = "drop"
    blocker = _file_in_the_way(tmp_path)
    values = {
        **config_values,
        "trusted-certs": "nowhere.pem",
        "user-certs-dir": f"{blocker}/certs",
        "log-file": f"{blocker}/x.log",
        "dns-timeout": "0.5",
    }
    code, results, out = check_config(write_ini(tmp_path / "webapp.ini", values), tmp_path)
    assert code == 2
    assert len([line for line in out.splitlines() if not line.startswith("WARN ")]) == 5
    assert results["config"][0] == "ok"
    assert {key for key, (s, _) in results.items() if s == "FAIL"} == set(KEYS[1:])


@pytest.mark.parametrize(
    ("values", "needle"),
    [({"dkim": "maybe"}, "dkim"), ({"dns-nameservers": "127.0.0.1:99999"}, "dns-nameservers")],
)
def test_check_config_unusable_file_is_one_line(tmp_path, values, needle) -> None:
    code, results, _out = check_config(write_ini(tmp_path / "webapp.ini", values), tmp_path)
    assert code == 2
    assert list(results) == ["config"] and results["config"][0] == "FAIL"
    assert needle in results["config"][1]


def test_check_config_names_misspelt_keys(tmp_path, config_values) -> None:
    """``lookup_token`` (underscore) would leave /certs off without a word; say so."""
    values = {**config_values, "lookup_token": "x", "metrics-tokn": "y"}
    code, results, out = check_config(write_ini(tmp_path / "webapp.ini", values), tmp_path)
    assert code == 2, out
    assert list(results) == ["config"]  # nothing else is judged under a config that misfires
    state, detail = results["config"]
    assert state == "FAIL" and "unknown configuration key 'lookup_token'" in detail


def test_check_config_missing_file(tmp_path) -> None:
    code, results, _out = check_config(tmp_path / "absent.ini", tmp_path)
    assert code == 2
    assert results["config"][0] == "FAIL" and "not found" in results["config"][1]


def test_healthz_survives_the_folder_being_removed(start_service, tmp_path) -> None:
    """A deleted folder is recreated on the next probe (as the store does before a write)."""
    server = start_service()
    shutil.rmtree(tmp_path / "certs")
    assert call(server, "/healthz").status == 200
    assert (tmp_path / "certs").is_dir()
