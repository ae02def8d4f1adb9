"""The two certificate stores side by side: HTTP throughput, and listing 100,000 certificates.

- Throughput: the same HTTP load (1-message batches, 8 clients, the corpus already stored so
  verdicts are ``unchanged``) against gunicorn with ``store = folder`` and with
  ``store = postgresql`` (a throwaway PostgreSQL cluster on 127.0.0.1, ``tests/postgres.py``),
  alternating folder, database, folder, database so that other work on the machine hits both
  alike; each backend's best run counts. The warm-up that stores the corpus is timed too.
- Listing: ``GET /certs`` and ``GET /certs?expiring-within=30d`` through gunicorn over a store
  of 100,000 certificates: a folder of certificate files (hard links to one PEM, else copies;
  the first listing builds the sidecar index, and a listing right after a file is added scans
  the folder's names), and a database loaded with ``COPY``.
"""

from __future__ import annotations

import contextlib
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from bench import BenchError
from bench.http_load import LoadResult, batch_bodies, gunicorn, run_load, server_pids, warm_up
from bench.scaling import fill_store
from bench.workspace import Workspace
from smime_collector.store.postgres import PostgresStore
from smime_collector.trust import fingerprint
from tests.postgres import Postgres, running_postgres
from tests.servers import Gunicorn

LOOKUP_TOKEN = "bench lookup token"
BACKENDS = ("folder", "postgresql")


@dataclass
class Throughput:
    warm_up: dict[str, LoadResult] = field(default_factory=dict)
    runs: dict[str, list[LoadResult]] = field(default_factory=dict)

    def best(self, backend: str) -> LoadResult:
        return max(self.runs[backend], key=lambda r: r.rps)


@dataclass
class Listing:
    size: int
    first: float  # seconds: the first listing (folder: builds the index from the files)
    warm: list[float]  # seconds of later listings, nothing changed
    after_write: float  # seconds right after one more file was added (folder) / row (db)
    expiring: float  # seconds of ?expiring-within=30d
    count: int
    payload_bytes: int


@contextlib.contextmanager
def cluster() -> Iterator[Postgres]:
    """A started throwaway cluster; destroyed afterwards, also on error."""
    with running_postgres() as started:
        yield started


def new_database(postgres: Postgres) -> str:
    """The URL (password included) of a fresh, empty database."""
    return postgres.url(postgres.new_database("bench"), with_password=True)


def write_ini(ws: Workspace, name: str, backend: str, url: str = "", certs: str = "certs") -> Path:
    extra = {"lookup-token": LOOKUP_TOKEN, "user-certs-dir": certs}
    if backend == "postgresql":
        extra |= {"store": "postgresql", "database-url": url}
    return ws.write_ini(name, roots=150, extra=extra)


def throughput(
    ws: Workspace, url: str, requests: int, seconds: float, rounds: int, workers: int
) -> Throughput:
    """Warm up both servers (every corpus message stored once), then alternate loads."""
    messages = ws.corpus.messages
    result = Throughput()
    with contextlib.ExitStack() as stack:
        servers: dict[str, Gunicorn] = {}
        for backend in BACKENDS:
            ini = write_ini(ws, f"throughput-{backend}", backend, url)
            server = stack.enter_context(gunicorn(ini, ini.parent / "gunicorn", workers=workers))
            servers[backend] = server
            warm = warm_up(server.url, messages, server_pids(server))
            if warm.errors:
                raise BenchError(f"{backend} warm-up: {warm.errors} errors: {warm.first_error}")
            result.warm_up[backend] = warm
        bodies = batch_bodies(messages, 1, len(messages))
        for _ in range(rounds):
            for backend, server in servers.items():
                run = run_load(
                    server.url,
                    bodies,
                    batch=1,
                    concurrency=8,
                    max_requests=requests,
                    max_seconds=seconds,
                    server_pids=server_pids(server),
                )
                result.runs.setdefault(backend, []).append(run)
    return result


def listings(ws: Workspace, url: str, size: int, repeats: int) -> dict[str, Listing]:
    """``GET /certs`` over ``size`` certificates, with each backend."""
    pem = ws.corpus.root_pem()
    cert = x509.load_pem_x509_certificate(pem)
    found = {}
    for backend in BACKENDS:
        name = f"listing-{backend}"
        ini = write_ini(ws, name, backend, url, certs="many")
        if backend == "folder":
            fill_store(ini.parent / "many", size, pem)
        else:
            fill_database(url, cert, size)
        with gunicorn(ini, ini.parent / "gunicorn", workers=2) as server:
            found[backend] = _measure_listing(server, ini.parent / "many", url, cert, size, repeats)
    return found


def fill_database(url: str, cert: x509.Certificate, size: int) -> None:
    """``size`` addresses holding the one certificate, loaded with COPY (schema first)."""
    store = PostgresStore(url)
    store.prepare()
    store.close()
    der = cert.public_bytes(serialization.Encoding.DER)
    sha = fingerprint(cert)
    with psycopg.connect(url, autocommit=True) as conn, conn.transaction():
        conn.execute(
            "INSERT INTO certificates (sha256, der, issuer, not_before, not_after) "
            "VALUES (%s, %s, %s, %s, %s) ON CONFLICT DO NOTHING",
            (
                sha,
                der,
                cert.issuer.rfc4514_string(),
                cert.not_valid_before_utc,
                cert.not_valid_after_utc,
            ),
        )
        with conn.cursor().copy("COPY addresses (address, sha256, not_after) FROM STDIN") as copy:
            for i in range(size):
                copy.write_row((f"filler{i:06d}@bulk.bench.example", sha, cert.not_valid_after_utc))
        conn.execute("ANALYZE addresses")


def _get(url: str) -> tuple[float, int, int]:
    """Seconds, count and bytes of one listing."""
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {LOOKUP_TOKEN}"})
    start = time.perf_counter()
    with urllib.request.urlopen(request, timeout=120) as answer:
        body = answer.read()
    seconds = time.perf_counter() - start
    count = int(body.rsplit(b'"count":', 1)[1].split(b"}", 1)[0].split(b",", 1)[0])
    return seconds, count, len(body)


def _measure_listing(
    server: Gunicorn, folder: Path, url: str, cert: x509.Certificate, size: int, repeats: int
) -> Listing:
    listing_url = server.url + "certs"
    first, count, payload = _get(listing_url)
    if count != size:
        raise BenchError(f"listing holds {count} certificates, not {size}")
    _get(listing_url)  # the other worker's first listing (its own connection or index read)
    time.sleep(1.1)  # out of the index's racy-mtime window, as a folder left alone would be
    warm = [_get(listing_url)[0] for _ in range(repeats)]
    pem = cert.public_bytes(serialization.Encoding.PEM)
    if folder.is_dir():
        (folder / "one-more@bulk.bench.example.crt").write_bytes(pem)
    else:
        fill_extra(url, cert)
    after_write, count_after, _ = _get(listing_url)
    if count_after != size + 1:
        raise BenchError(f"listing after a write holds {count_after}, not {size + 1}")
    time.sleep(1.1)  # the folder trusts its index again once the write is out of that window
    expiring = min(_get(listing_url + "?expiring-within=30d")[0] for _ in range(repeats))
    return Listing(size, first, warm, after_write, expiring, count, payload)


def fill_extra(url: str, cert: x509.Certificate) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO addresses (address, sha256, not_after) VALUES (%s, %s, %s)",
            ("one-more@bulk.bench.example", fingerprint(cert), cert.not_valid_after_utc),
        )
