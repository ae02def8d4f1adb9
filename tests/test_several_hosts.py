"""Several collector hosts, one PostgreSQL: real gunicorn masters, a real database.

- Two gunicorn masters on different ports (2 workers each) share one database and are hammered
  concurrently with older and newer certificates for the same addresses: the final state is the
  newest certificate of each address, the history holds every replaced and every refused
  certificate, and no request gets a 5xx.
- The database stopped in the middle of a load: 503s (``store-error``) and ``/healthz`` failing
  ``store``; restarted: the relay's retries store everything, nothing is lost, and the pools
  reconnected by themselves.
- A database that is down when a master starts stops it with one line; ``--check-config``
  names the database.
"""

from __future__ import annotations

import datetime as dt
import json
import random
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from http.client import HTTPConnection
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from cryptography import x509

from smime_collector.store import Why
from smime_collector.store.postgres import PostgresStore
from smime_collector.trust import fingerprint
from tests import pki
from tests.conftest import write_ini
from tests.dnsserver import LoopbackDNS
from tests.helpers import OUTCOME_LINE, TOKEN_HEADER, relay_event, run_cli
from tests.mailfactory import MailFactory, dkim_sign
from tests.postgres import PASSWORD, Postgres, running_postgres
from tests.servers import Gunicorn, free_port, start_gunicorn

pytestmark = pytest.mark.slow

TOKEN = "relay-token"
LOOKUP = "lookup-token"
ADDRESSES = 8
VERSIONS = 4
SENDS = 6  # each version of each address is sent this many times, shuffled
CLIENTS = 8
TIME_BUDGET = 90.0  # seconds; a run that has not finished by then fails, it never hangs


@dataclass
class Corpus:
    addresses: list[str]
    certs: dict[tuple[str, int], x509.Certificate]
    messages: dict[tuple[str, int], bytes]


def build_corpus(factory: MailFactory, prefix: str) -> Corpus:
    """``VERSIONS`` certificates per address, notBefore rising with the version (EC: fast)."""
    now = dt.datetime.now(dt.UTC)
    addresses = [f"{prefix}{i}@host{i % 2}.example" for i in range(ADDRESSES)]
    certs, messages = {}, {}
    for address in addresses:
        domain = address.rpartition("@")[2]
        for version in range(VERSIONS):
            not_before = now - dt.timedelta(days=40 - 10 * version)
            identity = pki.make_leaf(factory.root, address, key_type="ec", not_before=not_before)
            entity = pki.sign_detached(
                pki.mime_body(f"v{version}\n"), identity, tool="cryptography"
            )
            raw = pki.message(entity, from_addr=address)
            certs[address, version] = identity.cert
            messages[address, version] = dkim_sign(
                raw, factory.dkim_key(domain), domain, factory.selector
            )
    return Corpus(addresses, certs, messages)


def post(server: Gunicorn, body: bytes, path: str = "/") -> tuple[int, bytes]:
    url = urlsplit(server.url)
    conn = HTTPConnection(url.hostname, url.port, timeout=60)
    try:
        headers = {"Content-Type": "application/json", TOKEN_HEADER: TOKEN}
        conn.request("POST", path, body=body, headers=headers)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def get(server: Gunicorn, path: str, token: str | None = None) -> tuple[int, bytes]:
    url = urlsplit(server.url)
    conn = HTTPConnection(url.hostname, url.port, timeout=60)
    try:
        conn.request("GET", path, headers={"Authorization": f"Bearer {token}"} if token else {})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def body_of(raw: bytes) -> bytes:
    return json.dumps([relay_event(raw)]).encode()


def host_ini(folder: Path, factory: MailFactory, dns: LoopbackDNS, database: dict[str, str]):
    folder.mkdir(parents=True, exist_ok=True)
    return write_ini(
        folder / "webapp.ini",
        {
            "x-messagesystems-webhook-token": TOKEN,
            "lookup-token": LOOKUP,
            "log-file": "webapp.log",
            "dns-nameservers": dns.nameserver,
            "trusted-certs": str(factory.ca_file),
            **database,
        },
    )


def verdicts_of(*logs: Path) -> list[tuple[str, str, str]]:
    found = []
    for log in logs:
        found += OUTCOME_LINE.findall(log.read_text("utf-8")) if log.exists() else []
    return found


@dataclass
class Relay:
    """SparkPost's behaviour, in threads: each request is sent until it gets a 200 (a 503 is
    retried after a pause), spread over the hosts; anything else is recorded as an error."""

    hosts: list[Gunicorn]
    pause: float = 0.2

    def __post_init__(self) -> None:
        self.statuses: Counter[int] = Counter()
        self.errors: list[str] = []
        self.done = 0
        self.lock = threading.Lock()

    def run(self, bodies: list[bytes], deadline: float) -> None:
        queue = list(enumerate(bodies))
        rng = random.Random(20261129)

        def client() -> None:
            while time.monotonic() < deadline:
                with self.lock:
                    if not queue:
                        return
                    index, body = queue.pop()
                    host = self.hosts[rng.randrange(len(self.hosts))]
                try:
                    status, _ = post(host, body)
                except OSError as exc:
                    status, error = 0, repr(exc)
                else:
                    error = "" if status in (200, 503) else f"HTTP {status}"
                with self.lock:
                    self.statuses[status] += 1
                    if error:
                        self.errors.append(error)
                    if status == 200:
                        self.done += 1
                    else:
                        queue.insert(0, (index, body))  # the relay retries it later
                if status != 200:
                    time.sleep(self.pause)

        threads = [threading.Thread(target=client) for _ in range(CLIENTS)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()


@pytest.fixture
def factory(dns_server: LoopbackDNS, tmp_path: Path) -> MailFactory:
    return MailFactory.create(dns_server, tmp_path)


@pytest.fixture
def servers() -> Iterator[list[Gunicorn]]:
    """Every gunicorn a test starts, stopped by pid afterwards."""
    started: list[Gunicorn] = []
    yield started
    for server in started:
        server.stop()


def check_final_state(store: PostgresStore, corpus: Corpus, logs: list[Path]) -> None:
    """Newest certificate in place; history = every replaced and every refused certificate."""
    verdicts = verdicts_of(*logs)
    stored = Counter(email for outcome, _, email in verdicts if outcome == "stored")
    refused = Counter(email for _, reason, email in verdicts if reason == "older-than-stored")
    for address in corpus.addresses:
        newest = corpus.certs[address, VERSIONS - 1]
        assert store.get(address) == newest, address
        history = store.history(address)
        replaced = [e for e in history if e.event == Why.REPLACED]
        refusals = [e for e in history if e.event == Why.REFUSED_OLDER]
        version_of = {fingerprint(corpus.certs[address, v]): v for v in range(VERSIONS)}
        assert len(replaced) == stored[address] - 1, (address, stored[address], history)
        assert len({e.sha256 for e in replaced}) == len(replaced), "no certificate replaced twice"
        assert all(version_of[e.sha256] < VERSIONS - 1 for e in replaced)
        assert len(refusals) == refused[address], (address, refused[address], history)
        assert [e.at for e in history] == sorted((e.at for e in history), reverse=True)


def test_two_hosts_share_one_database_and_never_downgrade(
    tmp_path, factory, dns_server, database, servers
) -> None:
    corpus = build_corpus(factory, "shared")
    hosts = [
        start_gunicorn(host_ini(tmp_path / name, factory, dns_server, database), tmp_path / name)
        for name in ("host-a", "host-b")
    ]
    servers.extend(hosts)
    assert hosts[0].url != hosts[1].url
    for host in hosts:
        status, body = get(host, "/healthz")
        assert status == 200 and json.loads(body)["store"] == "postgresql", body
    bodies = [body_of(corpus.messages[key]) for key in corpus.messages for _ in range(SENDS)]
    random.Random(11).shuffle(bodies)
    relay = Relay(hosts, pause=0.05)
    relay.run(bodies, time.monotonic() + TIME_BUDGET)

    assert relay.done == len(bodies), f"only {relay.done} of {len(bodies)} answered 200"
    assert not relay.errors, relay.errors[:5]
    assert set(relay.statuses) == {200}, relay.statuses  # zero 5xx: not even one 503
    logs = [tmp_path / name / "webapp.log" for name in ("host-a", "host-b")]
    assert all(verdicts_of(log) for log in logs), "both hosts judged messages"
    store = PostgresStore(database["database-url"], PASSWORD)
    try:
        check_final_state(store, corpus, logs)
    finally:
        store.close()
    # Either host answers lookups from the one database.
    for host in hosts:
        status, body = get(host, "/certs", LOOKUP)
        listing = json.loads(body)
        assert status == 200 and listing["count"] == ADDRESSES
        assert {e["sha256"] for e in listing["certificates"]} == {
            fingerprint(corpus.certs[a, VERSIONS - 1]) for a in corpus.addresses
        }


def test_a_database_outage_is_503_and_loses_nothing(tmp_path, factory, dns_server, servers) -> None:
    corpus = build_corpus(factory, "outage")
    with running_postgres() as cluster:
        database = {
            "store": "postgresql",
            "database-url": cluster.url(cluster.new_database(), with_password=True),
        }
        host = start_gunicorn(host_ini(tmp_path, factory, dns_server, database), tmp_path)
        servers.append(host)
        # Versions in rising order per address, as people renew: the last one must win.
        bodies = [body_of(corpus.messages[a, v]) for v in range(VERSIONS) for a in corpus.addresses]
        bodies.reverse()  # Relay pops from the end
        relay = Relay([host])
        sender = threading.Thread(target=relay.run, args=(bodies, time.monotonic() + 120))
        sender.start()
        try:
            wait_for(lambda: relay.done >= len(bodies) // 3, "a third of the load to land")
            cluster.stop()
            wait_for(lambda: relay.statuses[503] >= 3, "503s while the database is down")
            status, body = get(host, "/healthz")
            assert status == 503, body
            assert json.loads(body)["failing"] == ["store"]
            status, body = get(host, "/certs", LOOKUP)
            assert status == 503, body
            # Metrics still answer: the 503s are counted, only the store's gauges are missing.
            status, body = get(host, "/metrics")
            assert status == 200, body
            assert b'smime_request_duration_seconds_count{code="503"}' in body, body
            assert b"smime_certificates_stored " not in body
            cluster.start()
        finally:
            sender.join()
        assert relay.done == len(bodies), f"only {relay.done} of {len(bodies)} stored"
        assert not relay.errors, relay.errors[:5]
        assert set(relay.statuses) == {200, 503}, relay.statuses
        # Each worker answers a failed database from memory for a moment before it tries again,
        # so the worker this probe reaches may still be in that moment: wait, bounded.
        wait_for(lambda: get(host, "/healthz")[0] == 200, "/healthz to be 200 again", 30)
        verdicts = verdicts_of(tmp_path / "webapp.log")
        assert ("tempfail", "store-error") in {(o, r) for o, r, _ in verdicts}
        # A retried older version may land after a newer one: refused, and recorded as such.
        assert {(o, r) for o, r, _ in verdicts} <= {
            ("stored", "ok"),
            ("unchanged", "ok"),
            ("tempfail", "store-error"),
            ("rejected", "older-than-stored"),
        }
        store = PostgresStore(database["database-url"])
        try:
            check_final_state(store, corpus, [tmp_path / "webapp.log"])
        finally:
            store.close()


def wait_for(condition, what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def test_a_master_does_not_start_without_its_database(tmp_path, factory, dns_server) -> None:
    with running_postgres() as cluster:
        url = cluster.url("smime")
    # the cluster is gone: nothing listens on that port any more
    ini = host_ini(tmp_path, factory, dns_server, {"store": "postgresql", "database-url": url})
    with pytest.raises(RuntimeError) as info:
        start_gunicorn(ini, tmp_path)
    message = str(info.value)
    assert "gunicorn exited with 2" in message
    assert "configuration error: postgresql://collector@127.0.0.1:" in message


def test_check_config_names_the_database(
    tmp_path, factory, dns_server, database, postgres: Postgres
) -> None:
    ini = host_ini(tmp_path, factory, dns_server, database)
    proc = run_cli("--check-config", "--config", ini, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    line = next(line for line in proc.stdout.splitlines() if line.split(" ")[1] == "store:")
    assert line.startswith("ok store: postgresql://collector@127.0.0.1:")
    assert "is writable" in line and PASSWORD not in proc.stdout
    wrong = {**database, "database-url": database["database-url"].replace("collector@", "nobody@")}
    proc = run_cli("--check-config", "--config", host_ini(tmp_path, factory, dns_server, wrong))
    assert proc.returncode == 2
    assert "FAIL store: postgresql://nobody@127.0.0.1:" in proc.stdout


@pytest.mark.parametrize(
    ("change", "cause"),
    [
        ("password", "password authentication failed"),
        ("database", 'database "no_such_database" does not exist'),
        ("port", "refused"),
    ],
)
def test_check_config_says_why_the_database_refused(
    tmp_path, factory, dns_server, database, postgres: Postgres, change, cause
) -> None:
    """The one store line carries libpq's reason, not only the pool's "couldn't get a
    connection", and never the password."""
    wrong_password = "not-the-collector-password"
    (tmp_path / "wrong-password").write_text(wrong_password + "\n")
    url = database["database-url"]
    changed = {
        "password": {**database, "database-password-file": str(tmp_path / "wrong-password")},
        "database": {**database, "database-url": url.rsplit("/", 1)[0] + "/no_such_database"},
        "port": {**database, "database-url": url.replace(f":{postgres.port}/", f":{free_port()}/")},
    }[change]
    proc = run_cli("--check-config", "--config", host_ini(tmp_path, factory, dns_server, changed))
    assert proc.returncode == 2, proc.stdout + proc.stderr
    (line,) = [line for line in proc.stdout.splitlines() if line.startswith("FAIL store:")]
    assert line.startswith("FAIL store: postgresql://collector@127.0.0.1:"), line
    assert cause in line, line
    assert wrong_password not in proc.stdout + proc.stderr and PASSWORD not in proc.stdout
    assert "error connecting" not in proc.stderr, "the cause is said once, in the store line"
