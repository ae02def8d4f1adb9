"""Load: real gunicorn (4 workers) and 16 concurrent relay clients, good and bad mail mixed.

About 2,000 requests: signed and DKIM-signed messages for 20 addresses, four certificate
versions each (increasing notBefore) sent many times in shuffled order, so workers race on the
same address; corrupted messages alone and inside batches; unparseable bodies; wrong tokens.

Afterwards every address's file must hold exactly its newest certificate, ``.history/`` every
certificate that was stored and then replaced (derived from the logged ``outcome=stored``
verdicts: the store never goes back to an older certificate, so each address's stored
certificates form a rising chain whose last one is in place and the others are in history), no
request may get a 5xx, and no file may be torn, partial or stray. The run is bounded by count
and by a time budget; it prints what it ran and the figures it measured.
"""

from __future__ import annotations

import datetime as dt
import http.client
import json
import random
import re
import threading
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes

from tests import pki
from tests.conftest import write_ini
from tests.dnsserver import LoopbackDNS
from tests.helpers import OUTCOME_LINE, TOKEN_HEADER, relay_event, visible_files
from tests.mailfactory import MailFactory, dkim_sign
from tests.servers import start_gunicorn

pytestmark = pytest.mark.slow

WORKERS = 4
CLIENTS = 16
REQUESTS = 2000
ADDRESSES = 20
VERSIONS = 4
DOMAINS = 4
TIME_BUDGET = 60.0  # seconds of sending; whatever is left then is reported as not sent
SEED = 20181122

STORED_LINE = re.compile(
    r"^[^|\n]*,INFO,[\w.:-]+,\| outcome=stored,reason=ok,email=([^,\s]+),", re.M
)
VERDICT_LINE = OUTCOME_LINE


def fingerprint(cert: x509.Certificate) -> str:
    return cert.fingerprint(hashes.SHA256()).hex()


@dataclass
class Request:
    body: bytes
    token: str
    expected: int
    good: list[tuple[str, int]] = field(default_factory=list)  # (address, version) inside
    messages: int = 0  # messages a 200 answer must have judged


@dataclass
class Result:
    status: int | None
    seconds: float
    error: str | None = None


@dataclass
class Corpus:
    """The certificates and messages of the run (EC keys: fast to make, fine to encrypt to)."""

    addresses: list[str]
    certs: dict[tuple[str, int], x509.Certificate]
    good: dict[tuple[str, int], bytes]
    bad: list[bytes]


def build_corpus(factory: MailFactory) -> Corpus:
    rng = random.Random(SEED)
    now = dt.datetime.now(dt.UTC)
    addresses = [f"user{i:02d}@load{i % DOMAINS}.example" for i in range(ADDRESSES)]
    outsider_root = pki.make_root("Not Trusted Root", key_type="ec")
    identities: dict[tuple[str, int], pki.Identity] = {}
    good: dict[tuple[str, int], bytes] = {}
    bad: list[bytes] = []

    def send(entity: bytes, address: str) -> bytes:
        domain = address.rpartition("@")[2]
        raw = pki.message(entity, from_addr=address)
        return dkim_sign(raw, factory.dkim_key(domain), domain, factory.selector)

    for address in addresses:
        for version in range(VERSIONS):
            not_before = now - dt.timedelta(days=40 - 10 * version)
            identity = pki.make_leaf(factory.root, address, key_type="ec", not_before=not_before)
            identities[address, version] = identity
            content = pki.mime_body(f"version {version} for {address}\n")
            good[address, version] = send(sign(content, identity), address)
    for index, address in enumerate(addresses):
        # Rejected for good reasons: altered after signing, DKIM broken in transit, truncated,
        # signed with someone else's certificate, a certificate from an untrusted root.
        content = pki.mime_body(f"altered for {address}\n")
        signed = sign(content, identities[address, 0])
        bad.append(send(signed.replace(b"altered", b"ALTERED", 1), address))
        message = good[address, rng.randrange(VERSIONS)]
        bad.append(message.replace(b"version", b"VERSION", 1))
        bad.append(message[: len(message) // 2])
        other = addresses[(index + DOMAINS) % ADDRESSES]  # same domain, so DKIM is aligned
        bad.append(send(sign(content, identities[other, 0]), address))
        stranger = pki.make_leaf(outsider_root, address, key_type="ec")
        bad.append(send(sign(content, stranger), address))
    certs = {key: identity.cert for key, identity in identities.items()}
    return Corpus(addresses, certs, good, bad)


def sign(content: bytes, identity: pki.Identity) -> bytes:
    return pki.sign_detached(content, identity, tool="cryptography")


def plan(corpus: Corpus) -> list[Request]:
    """REQUESTS requests in a shuffled but reproducible order."""
    rng = random.Random(SEED)

    def body(raws: list[bytes]) -> bytes:
        return json.dumps([relay_event(raw) for raw in raws]).encode()

    keys = sorted(corpus.good)
    requests = [
        Request(body([corpus.good[key]]), "test-token", 200, [key], 1)
        for key in keys * 14  # every version of every address, many times
    ]
    for _ in range(350):  # batches mixing good and bad messages
        key = rng.choice(keys)
        raws = [corpus.good[key], rng.choice(corpus.bad), rng.choice(corpus.bad)]
        rng.shuffle(raws)
        requests.append(Request(body(raws), "test-token", 200, [key], 3))
    while len(requests) < REQUESTS - 100:
        requests.append(Request(body([rng.choice(corpus.bad)]), "test-token", 200, [], 1))
    for i in range(60):
        requests.append(Request(b'[{"msys": ' * (i + 1), "test-token", 400))
    for _ in range(REQUESTS - len(requests)):
        requests.append(Request(body([rng.choice(list(corpus.good.values()))]), "wrong", 401))
    rng.shuffle(requests)
    return requests


def run_clients(url: str, requests: list[Request]) -> tuple[dict[int, Result], float]:
    """Send every request from CLIENTS threads until done or TIME_BUDGET is spent."""
    parts = urlsplit(url)
    results: dict[int, Result] = {}
    lock = threading.Lock()
    queue = iter(enumerate(requests))
    deadline = time.monotonic() + TIME_BUDGET

    def client() -> None:
        while time.monotonic() < deadline:
            with lock:
                item = next(queue, None)
            if item is None:
                return
            index, request = item
            start = time.perf_counter()
            connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=60)
            try:
                connection.request(
                    "POST",
                    "/",
                    body=request.body,
                    headers={"Content-Type": "application/json", TOKEN_HEADER: request.token},
                )
                response = connection.getresponse()
                response.read()
                result = Result(response.status, time.perf_counter() - start)
            except OSError as exc:
                result = Result(None, time.perf_counter() - start, repr(exc))
            finally:
                connection.close()
            with lock:
                results[index] = result

    threads = [threading.Thread(target=client) for _ in range(CLIENTS)]
    began = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results, time.perf_counter() - began


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else 0.0


def test_concurrent_relay_load(tmp_path: Path, dns_server: LoopbackDNS, capsys) -> None:
    factory = MailFactory.create(dns_server, tmp_path)
    corpus = build_corpus(factory)
    requests = plan(corpus)
    ini = write_ini(
        tmp_path / "webapp.ini",
        {
            "x-messagesystems-webhook-token": "test-token",
            "user-certs-dir": "certs",
            "log-file": "webapp.log",
            "dns-nameservers": dns_server.nameserver,
            "trusted-certs": str(factory.ca_file),
        },
    )
    server = start_gunicorn(ini, tmp_path, workers=WORKERS)
    try:
        results, seconds = run_clients(server.url, requests)
    finally:
        server.stop()

    statuses = Counter(result.status for result in results.values())
    latencies = [result.seconds for result in results.values()]
    log_text = (tmp_path / "webapp.log").read_text("utf-8")
    outcomes = Counter(f"{o}/{r}" for o, r, _ in VERDICT_LINE.findall(log_text))
    with capsys.disabled():  # the figures are the point of this test: always show them
        print(
            f"\nload: {len(results)} of {len(requests)} requests sent by {CLIENTS} clients to "
            f"{WORKERS} workers in {seconds:.1f} s = {len(results) / seconds:.0f} requests/s"
            f"\n  status {dict(sorted(statuses.items(), key=str))}"
            f"\n  latency p50 {percentile(latencies, 0.5) * 1000:.0f} ms, "
            f"p99 {percentile(latencies, 0.99) * 1000:.0f} ms, "
            f"max {max(latencies, default=0) * 1000:.0f} ms"
            f"\n  verdicts {dict(sorted(outcomes.items()))}"
        )

    # Every request was answered as its kind requires: no 5xx, no dropped connection.
    errors = [result.error for result in results.values() if result.error]
    assert not errors, errors[:5]
    wrong = {
        i: (requests[i].expected, r.status)
        for i, r in results.items()
        if r.status != requests[i].expected
    }
    assert not wrong, list(wrong.items())[:10]

    # Every message of every answered batch has exactly one verdict in the log, none broken.
    assert "Traceback" not in log_text
    judged = sum(requests[i].messages for i, r in results.items() if r.status == 200)
    assert sum(outcomes.values()) == judged
    assert not any(outcome.startswith("tempfail") for outcome in outcomes)

    certs_dir = tmp_path / "certs"
    history = certs_dir / ".history"
    acknowledged: dict[str, set[int]] = defaultdict(set)
    for i, result in results.items():
        for address, version in requests[i].good if result.status == 200 else []:
            acknowledged[address].add(version)
    stored_events = Counter(STORED_LINE.findall(log_text))
    missing = [a for a in corpus.addresses if not acknowledged[a]]
    assert not missing, f"too slow for a meaningful run: nothing judged yet for {missing}"
    for address in corpus.addresses:
        # A 200 means every message of the batch got a final verdict; the store never goes
        # back, so the file now holds the newest certificate any acknowledged message carried.
        newest = max(acknowledged[address])
        current = x509.load_pem_x509_certificate((certs_dir / f"{address}.crt").read_bytes())
        assert current == corpus.certs[address, newest], address
        kept = sorted(history.glob(f"{address}.*.crt"))
        kept_certs = [x509.load_pem_x509_certificate(path.read_bytes()) for path in kept]
        assert len(kept) == stored_events[address] - 1, (address, kept)
        versions_kept = [
            next(v for v in range(VERSIONS) if corpus.certs[address, v] == cert)
            for cert in kept_certs
        ]
        assert len(set(versions_kept)) == len(versions_kept)
        assert all(v < newest for v in versions_kept)
        for path, cert in zip(kept, kept_certs, strict=True):
            assert path.name == f"{address}.{fingerprint(cert)}.crt"

    # Nothing torn, partial, temporary or stray.
    assert visible_files(certs_dir) == sorted(f"{a}.crt" for a in corpus.addresses)
    for path in certs_dir.rglob("*"):
        assert not path.name.startswith(".tmp-"), path
        if path.suffix == ".crt":
            assert path.read_bytes().count(b"BEGIN CERTIFICATE") == 1, path
            x509.load_pem_x509_certificate(path.read_bytes())
    assert {p.name for p in certs_dir.iterdir() if p.name.startswith(".")} <= {
        ".chains",  # each certificate's issuers, for --recheck
        ".history",
        ".locks",
        ".verdicts",
        ".index",
    }
