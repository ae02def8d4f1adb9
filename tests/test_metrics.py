"""Metrics that follow Prometheus conventions, through real gunicorn (2 workers).

``tests/test_operations.py`` checks that every count adds up over the workers under both the
new and the deprecated names; here: what is read from the store at scrape time (and how long a
scrape waits for a database that is down), the build, and requests that never got an answer
because gunicorn's worker timeout killed their worker.
"""

from __future__ import annotations

import json
import socket
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from prometheus_client.parser import text_string_to_metric_families

import smime_collector
from smime_collector.metrics import DEPRECATED
from smime_collector.store import FolderStore
from smime_collector.store.postgres import POOL_WAIT, STATS_WAIT
from tests import pki
from tests.conftest import write_ini
from tests.helpers import TOKEN_HEADER, relay_event
from tests.servers import Gunicorn, start_gunicorn
from tests.test_operations import call
from webapp import create_app

pytestmark = pytest.mark.slow

WEBHOOK_TOKEN = "relay-secret"


def families(server: Gunicorn) -> dict[str, object]:
    answer = call(server, "/metrics")
    assert answer.status == 200, answer.body
    return {f.name: f for f in text_string_to_metric_families(answer.body.decode())}


def start(folder: Path, **env: str) -> Gunicorn:
    ini = write_ini(
        folder / "webapp.ini",
        {
            "x-messagesystems-webhook-token": WEBHOOK_TOKEN,
            "user-certs-dir": "certs",
            "log-file": "webapp.log",
        },
    )
    return start_gunicorn(ini, folder, workers=2, env=env)


@pytest.fixture
def servers():
    started: list[Gunicorn] = []
    yield started
    for server in started:
        server.stop()


def test_build_info_and_an_empty_store(tmp_path, servers) -> None:
    servers.append(server := start(tmp_path))
    found = families(server)
    (info,) = found["smime_build_info"].samples
    assert info.labels == {"version": smime_collector.__version__}
    assert info.value == 1
    assert found["smime_certificates_stored"].type == "gauge"
    assert [s.value for s in found["smime_certificates_stored"].samples] == [0]
    # No certificate, no earliest expiry: an absent series, not a made-up time.
    assert "smime_certificate_earliest_expiry_timestamp_seconds" not in found


def test_store_gauges_follow_the_folder(tmp_path, servers) -> None:
    """Certificates written behind the service's back (an import, a restore) show at the next
    scrape: the gauges are read from the store, not counted by the workers."""
    servers.append(server := start(tmp_path))
    root = pki.make_root("Gauge Root")
    store = FolderStore(tmp_path / "certs")
    now = datetime.now(UTC).replace(microsecond=0)
    ends = [now + timedelta(days=400), now + timedelta(days=12), now + timedelta(days=90)]
    for number, end in enumerate(ends):
        leaf = pki.make_leaf(root, f"user{number}@example.org", not_after=end)
        assert store.save(f"user{number}@example.org", leaf.cert).changed
        found = families(server)
        assert [s.value for s in found["smime_certificates_stored"].samples] == [number + 1]
        (earliest,) = found["smime_certificate_earliest_expiry_timestamp_seconds"].samples
        assert earliest.value == min(ends[: number + 1]).timestamp()


def test_request_duration_has_the_code_label_only(tmp_path, servers) -> None:
    servers.append(server := start(tmp_path))
    ok = call(server, "/", method="POST", body=b"[]", headers=json_headers())
    wrong = call(server, "/", method="POST", body=b"[]", headers=json_headers("nope"))
    assert (ok.status, wrong.status) == (200, 401)
    call(server, "/healthz")  # the operator's routes are not intake requests
    family = families(server)["smime_request_duration_seconds"]
    assert family.type == "histogram"
    counts = {
        s.labels["code"]: s.value
        for s in family.samples
        if s.name == "smime_request_duration_seconds_count"
    }
    assert counts == {"200": 1, "401": 1}
    assert {frozenset(s.labels) for s in family.samples} == {
        frozenset({"code"}),
        frozenset({"code", "le"}),
    }


def test_deprecated_names_are_still_exported(tmp_path, servers) -> None:
    servers.append(server := start(tmp_path))
    junk = json.dumps([relay_event(b"not a message")]).encode()  # one stage: parse
    assert call(server, "/", method="POST", body=junk, headers=json_headers()).status == 200
    answer = call(server, "/metrics")
    # A list, not a dict by name: the parser names the deprecated counter
    # smime_certificates_stored_total's family smime_certificates_stored, like the new gauge.
    found = list(text_string_to_metric_families(answer.body.decode()))
    for old, new in DEPRECATED.items():
        documented = {f.documentation for f in found if f.name == old.removesuffix("_total")}
        assert any(doc.startswith(f"DEPRECATED (use {new})") for doc in documented), old
        current = new.removesuffix("_count").removesuffix("_total")
        assert any(
            f.name == current and not f.documentation.startswith("DEPRECATED") for f in found
        )


def test_a_request_killed_by_the_worker_timeout_is_counted(tmp_path, servers) -> None:
    """A client that stops half-way through its body holds a sync worker until gunicorn's
    timeout kills it: the app never answers, so only the abort hook can count it."""
    servers.append(server := start(tmp_path, GUNICORN_TIMEOUT="2"))
    assert timeouts(server) == 0
    url = urlsplit(server.url)
    with socket.create_connection((url.hostname, url.port), timeout=30) as stalled:
        stalled.sendall(
            b"POST / HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            + f"{TOKEN_HEADER}: {WEBHOOK_TOKEN}\r\n".encode()
            + b"Content-Length: 1000\r\n\r\n[{"
        )
        deadline = time.monotonic() + 30
        while timeouts(server) == 0 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert timeouts(server) == 1
        # gunicorn answers what it can for the killed worker: a 500 without our headers.
        assert stalled.recv(4000).startswith(b"HTTP/1.1 500 Internal Server Error\r\n")
    durations = families(server)["smime_request_duration_seconds"].samples
    killed = [s for s in durations if s.name.endswith("_count") and s.labels["code"] == "500"]
    assert [s.value for s in killed] == [1]
    # The master replaced the worker; the service still answers.
    assert call(server, "/", method="POST", body=b"[]", headers=json_headers()).status == 200
    assert timeouts(server) == 1


def timeouts(server: Gunicorn) -> float:
    (sample,) = [
        s
        for s in families(server)["smime_worker_timeouts"].samples
        if s.name == "smime_worker_timeouts_total"
    ]
    return sample.value


def json_headers(token: str = WEBHOOK_TOKEN) -> dict[str, str]:
    return {"Content-Type": "application/json", TOKEN_HEADER: token}


def test_a_scrape_during_a_database_outage_waits_briefly_for_the_store(
    make_settings, database, tmp_path
) -> None:
    """The store's gauges ask the database with a short wait of their own, not the pool's
    request wait: a scrape while the database refuses (here: a wrong password) is answered
    soon, with the gauges left out and the rest served. What the scrape waited is read from
    the reason the log gives, not timed."""
    wrong = tmp_path / "wrong-password"
    wrong.write_text("not the password\n")
    settings = make_settings(**database, database_password_file=str(wrong))
    client = create_app(settings).test_client()
    answer = client.get("/metrics")
    assert answer.status_code == 200
    assert b"smime_build_info" in answer.data
    assert b"smime_certificates_stored " not in answer.data
    log = (tmp_path / "webapp.log").read_text("utf-8")
    (line,) = [line for line in log.splitlines() if "metrics: store gauges left out" in line]
    assert "password authentication failed" in line, line
    assert f"couldn't get a connection after {STATS_WAIT:.2f} sec" in line, line
    assert STATS_WAIT < POOL_WAIT
