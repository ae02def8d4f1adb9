"""The certificate stores, directly through CertStore and through the whole pipeline.

Every test of the store's semantics runs on both backends (``backend`` is ``folder`` or
``postgresql``, a real PostgreSQL started by the session): stored, unchanged, no downgrade
with complete history (when and why), listings, concurrent writers in separate processes, a
store that fails. Then what only the folder has: durable atomic writes, nothing visible but
``<address>.crt``, planted symlinks, file-name safety, the sidecar index, and a read-only or
full file system (real tmpfs mounts; skipped with the reason where mounting is not allowed).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import errno
import json
import multiprocessing
import os
import shutil
import socket
import sqlite3
import stat
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from smime_collector.lookup import stored_pem
from smime_collector.pipeline import Collector
from smime_collector.store import (
    CertStore,
    FolderStore,
    HistoryEntry,
    StoreUnavailable,
    Why,
    open_store,
    schema,
)
from smime_collector.store import folder as certstore
from smime_collector.store.folder import HISTORY, INDEX, LOCKS, unsafe_address
from smime_collector.store.folderjournal import JOURNAL_DIR
from smime_collector.store.postgres import PostgresStore
from smime_collector.trust import fingerprint
from smime_collector.verdict import Outcome, Reason, Verdict
from tests import pki
from tests.helpers import post_batch, relay_event, visible_files
from tests.mailfactory import MailFactory
from tests.postgres import PASSWORD, Postgres
from webapp import create_app

ADDRESS = "victim@example.com"
NOW = dt.datetime.now(dt.UTC)


@pytest.fixture(scope="module")
def root() -> pki.Identity:
    return pki.make_root("Certstore Root", key_type="ec")


@pytest.fixture(scope="module")
def make_cert(root: pki.Identity) -> Callable[..., x509.Certificate]:
    """A certificate for ``address`` whose notBefore is ``days_ago`` days back (EC: fast)."""

    def make(address: str = ADDRESS, days_ago: float = 1) -> x509.Certificate:
        not_before = NOW - dt.timedelta(days=days_ago)
        return pki.make_leaf(root, address, key_type="ec", cn="", not_before=not_before).cert

    return make


BACKENDS = ["folder", "postgresql"]


def open_backend(spec: tuple[str, str]) -> CertStore:
    """A store from a picklable spec: ("folder", path) or ("postgresql", url)."""
    kind, where = spec
    return FolderStore(Path(where)) if kind == "folder" else PostgresStore(where, PASSWORD)


@pytest.fixture(params=BACKENDS)
def backend(request, tmp_path: Path) -> Iterator[tuple[str, str]]:
    """The spec of an empty store of each kind: a folder, or a fresh PostgreSQL database."""
    if request.param == "folder":
        yield "folder", str(tmp_path / "certs")
    else:
        cluster: Postgres = request.getfixturevalue("postgres")
        yield "postgresql", cluster.url(cluster.new_database())


@pytest.fixture
def any_store(backend) -> Iterator[CertStore]:
    """An empty store of each kind, prepared as the service prepares it."""
    store = open_backend(backend)
    store.prepare()
    yield store
    store.close()


@pytest.fixture
def store(tmp_path: Path) -> FolderStore:
    return FolderStore(tmp_path / "certs")


def pem_of(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def pem_der(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.DER)


def all_names(folder: Path) -> list[str]:
    """Every entry below ``folder``, relative, sorted (dot entries included)."""
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def assert_clean(folder: Path, addresses: list[str]) -> None:
    """Only ``<address>.crt`` visible; the rest is .history/ and .locks/, no temp files."""
    assert visible_files(folder) == sorted(f"{a}.crt" for a in addresses)
    hidden = {p.name for p in folder.iterdir() if p.name.startswith(".")}
    assert hidden <= {HISTORY, LOCKS, INDEX, JOURNAL_DIR}
    assert not [n for n in all_names(folder) if ".tmp-" in n or n.endswith(".tmp")]


# -- writes -----------------------------------------------------------------------------------


def test_a_write_is_one_pem_block_readable_by_everyone(store, make_cert) -> None:
    cert = make_cert()
    old_umask = os.umask(0o077)  # mkstemp makes 0600; the store must still publish 0644
    try:
        result = store.save(ADDRESS, cert)
    finally:
        os.umask(old_umask)
    assert (result.check.reason, result.changed) == ("ok", True)
    path = store.folder / f"{ADDRESS}.crt"
    assert result.location == str(path) and result.size == path.stat().st_size
    assert stat.S_ISREG(path.lstat().st_mode)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    data = path.read_bytes()
    assert data == pem_of(cert)
    assert data.count(b"-----BEGIN CERTIFICATE-----") == 1
    assert data.count(b"-----BEGIN") == 1, "one block and no key or anything else"
    assert x509.load_pem_x509_certificate(data) == cert
    assert_clean(store.folder, [ADDRESS])


def test_a_write_is_fsynced_renamed_then_the_folder_fsynced(store, make_cert, monkeypatch) -> None:
    events: list[tuple[str, str]] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd: int) -> None:
        events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        real_fsync(fd)

    def replace(src, dst) -> None:
        events.append(("replace", f"{Path(src).name}->{Path(dst).name}"))
        real_replace(src, dst)

    monkeypatch.setattr(certstore.os, "fsync", fsync)
    monkeypatch.setattr(certstore.os, "replace", replace)
    assert store.save(ADDRESS, make_cert()).changed
    folder = str(store.folder)
    assert len(events) == 3, events
    (kind1, tmp), (kind2, renamed), (kind3, synced_dir) = events
    assert kind1 == "fsync" and Path(tmp).parent == store.folder
    assert Path(tmp).name.startswith(".tmp-"), "the temporary file is dot-prefixed"
    assert (kind2, renamed) == ("replace", f"{Path(tmp).name}->{ADDRESS}.crt")
    assert (kind3, synced_dir) == ("fsync", folder)


def test_readers_only_ever_see_address_files(store, make_cert) -> None:
    other = "other@example.com"
    old, new = make_cert(days_ago=9), make_cert(days_ago=1)
    assert store.save(ADDRESS, old).changed
    assert store.save(ADDRESS, new).changed
    assert store.save(ADDRESS, old).check.reason == "older-than-stored"
    assert not store.save(ADDRESS, new).changed
    assert store.save(other, make_cert(other)).changed
    assert store.save("bad/address@example.com", new).check.reason == "unsafe-address"
    assert_clean(store.folder, [ADDRESS, other])


def test_a_damaged_file_is_replaced_never_trusted(store, make_cert) -> None:
    store.ensure()
    path = store.folder / f"{ADDRESS}.crt"
    path.write_bytes(b"-----BEGIN CERTIFICATE-----\ntorn")
    cert = make_cert()
    assert store.read(ADDRESS) is None
    assert store.save(ADDRESS, cert).changed
    assert path.read_bytes() == pem_of(cert)


# -- a symlink planted at the destination --------------------------------------------------


@pytest.mark.parametrize("target_kind", ["text", "newer-cert", "dangling"])
def test_a_planted_symlink_is_replaced_and_its_target_untouched(
    tmp_path, store, make_cert, target_kind
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    target = outside / "target.crt"
    if target_kind == "text":
        target.write_bytes(b"precious data outside the folder\n")
    elif target_kind == "newer-cert":  # a newer certificate must not make ours "older"
        target.write_bytes(pem_of(make_cert(days_ago=0)))
    before = target.read_bytes() if target.exists() else None
    store.ensure()
    link = store.folder / f"{ADDRESS}.crt"
    link.symlink_to(target)
    assert store.read(ADDRESS) is None, "read never follows the link"
    cert = make_cert(days_ago=5)
    result = store.save(ADDRESS, cert)
    assert (result.check.reason, result.changed) == ("ok", True)
    assert not link.is_symlink() and stat.S_ISREG(link.lstat().st_mode)
    assert link.read_bytes() == pem_of(cert)
    assert (target.read_bytes() if target.exists() else None) == before
    assert all_names(outside) == ([] if target_kind == "dangling" else ["target.crt"])


# -- unsafe addresses -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "address",
    [
        "a/b@example.com",
        "../../x@example.com",
        "a\\b@example.com",
        "a\x00b@example.com",
        "a\nb@example.com",
        "a\rb@example.com",
        "a\tb@example.com",
        "a\x1fb@example.com",
        "a\x7fb@example.com",
        ".hidden@example.com",
        ".history",
        "..",
        "a" * 243 + "@example.com",  # 255 characters
        "a" * 300,
        "é" * 100 + "@example.com",  # 112 characters but 212 bytes
        "a\ud800b@example.com",  # a lone surrogate names no file
    ],
    ids=lambda a: repr(a)[:30],
)
def test_unsafe_addresses(store, make_cert, address) -> None:
    assert unsafe_address(address)
    result = store.save(address, make_cert())
    assert (result.check.reason, result.changed) == ("unsafe-address", False)
    assert not store.folder.exists(), "nothing is created for an unsafe address"


@pytest.mark.parametrize(
    "address",
    ["alice@example.com", "o'brien+tag@example.com", "x@y", "a.b@c.d", "ü@example.com"],
)
def test_safe_addresses(address) -> None:
    assert unsafe_address(address) is None


def test_the_longest_safe_address_can_be_stored_and_replaced(store, make_cert) -> None:
    domain = "@" + ".".join(["d" * 60] * 2) + ".com"
    longest = "a" * (certstore.MAX_ADDRESS_BYTES - len(domain)) + domain
    assert len(longest.encode()) == certstore.MAX_ADDRESS_BYTES
    assert unsafe_address(longest) is None
    assert unsafe_address("a" + longest) is not None
    old, new = make_cert(longest, days_ago=9), make_cert(longest, days_ago=1)
    assert store.save(longest, old).changed
    result = store.save(longest, new)
    assert (result.check.reason, result.changed) == ("ok", True), result.check
    assert (store.folder / HISTORY / f"{longest}.{fingerprint(old)}.crt").is_file()


def test_a_long_address_is_rejected_not_retried_for_ever(store, make_cert) -> None:
    """252..254 characters: a valid address, but "<address>.lock" exceeds NAME_MAX."""
    domain = "@" + ".".join(["d" * 60] * 3) + ".com"
    address = "a" * (254 - len(domain)) + domain
    result = store.save(address, make_cert(address))
    assert (result.check.reason, result.check.tempfail) == ("unsafe-address", False)


@pytest.mark.parametrize(
    "address",
    ["", "a\x00b@example.com", "a\nb@example.com", "a" * 255, "a\ud800b@example.com"],
    ids=repr,
)
def test_addresses_no_backend_holds(any_store, make_cert, address) -> None:
    result = any_store.save(address, make_cert())
    assert (result.check.reason, result.check.tempfail) == ("unsafe-address", False)
    assert any_store.unsafe(address)
    assert any_store.list() == []


def test_the_folder_is_not_rewritten_when_nothing_changes(store, make_cert) -> None:
    newer, older = make_cert(days_ago=1), make_cert(days_ago=30)
    assert store.save(ADDRESS, newer).changed
    path = store.folder / f"{ADDRESS}.crt"
    before = path.stat()
    assert store.save(ADDRESS, older).check.reason == "older-than-stored"
    assert not store.save(ADDRESS.upper(), newer).changed
    assert path.read_bytes() == pem_of(newer)
    assert (path.stat().st_ino, path.stat().st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    history = store.folder / HISTORY
    assert [p.name for p in history.iterdir()] == [f"{ADDRESS}.jsonl"], "no copy of refusals"
    assert_clean(store.folder, [ADDRESS])


def test_replaced_certificates_are_kept_as_files_beside_the_journal(store, make_cert) -> None:
    first, second, third = (make_cert(days_ago=d) for d in (30, 10, 1))
    for cert in (first, second, third):
        assert store.save(ADDRESS, cert).changed
    assert (store.folder / f"{ADDRESS}.crt").read_bytes() == pem_of(third)
    history = store.folder / HISTORY
    assert sorted(p.name for p in history.glob("*.crt")) == sorted(
        f"{ADDRESS}.{fingerprint(c)}.crt" for c in (first, second)
    )
    for cert in (first, second):
        assert (history / f"{ADDRESS}.{fingerprint(cert)}.crt").read_bytes() == pem_of(cert)
    journal = [json.loads(line) for line in (history / f"{ADDRESS}.jsonl").read_text().splitlines()]
    assert [(j["sha256"], j["why"]) for j in journal] == [
        (fingerprint(first), "replaced"),
        (fingerprint(second), "replaced"),
    ]
    assert_clean(store.folder, [ADDRESS])


def test_history_kept_before_the_journal_still_counts(store, make_cert) -> None:
    """A folder written by an older version: a kept file, no journal; a torn journal line."""
    old, current = make_cert(days_ago=30), make_cert(days_ago=1)
    history = store.folder / HISTORY
    history.mkdir(parents=True)
    kept = history / f"{ADDRESS}.{fingerprint(old)}.crt"
    kept.write_bytes(pem_of(old))
    os.utime(kept, (1_600_000_000, 1_600_000_000))
    (store.folder / f"{ADDRESS}.crt").write_bytes(pem_of(current))
    (history / f"{ADDRESS}.jsonl").write_text('{"sha256": "torn')
    [entry] = store.history(ADDRESS)
    assert (entry.sha256, entry.event, entry.der) == (fingerprint(old), Why.REPLACED, pem_der(old))
    assert entry.at == dt.datetime.fromtimestamp(1_600_000_000, dt.UTC)


# -- the semantics, on both backends --------------------------------------------------------


def test_a_first_certificate_is_stored_where_the_backend_says(any_store, make_cert) -> None:
    cert = make_cert()
    assert any_store.get(ADDRESS) is None
    result = any_store.save(ADDRESS.upper(), cert)
    assert (result.check.reason, result.changed) == ("ok", True)
    assert result.location == any_store.location(ADDRESS)
    expected = (
        str(any_store.folder / f"{ADDRESS}.crt")
        if isinstance(any_store, FolderStore)
        else f"postgresql:{ADDRESS}"
    )
    assert result.location == expected
    assert any_store.get(ADDRESS) == cert
    assert any_store.get(ADDRESS.upper()) == cert, "addresses match case-insensitively"
    assert any_store.get("nobody@example.com") is None
    assert any_store.history(ADDRESS) == []


def test_an_older_certificate_does_not_replace_a_newer_one(any_store, make_cert) -> None:
    newer, older = make_cert(days_ago=1), make_cert(days_ago=30)
    assert any_store.save(ADDRESS, newer).changed
    result = any_store.save(ADDRESS, older)
    assert (result.check.reason, result.changed, result.check.tempfail) == (
        "older-than-stored",
        False,
        False,
    )
    assert any_store.get(ADDRESS) == newer
    [entry] = any_store.history(ADDRESS)
    assert (entry.sha256, entry.event) == (fingerprint(older), Why.REFUSED_OLDER)
    assert "newer" in entry.detail
    assert abs(entry.at - dt.datetime.now(dt.UTC)) < dt.timedelta(minutes=5)


def test_the_same_certificate_again_is_unchanged(any_store, make_cert) -> None:
    cert = make_cert()
    assert any_store.save(ADDRESS, cert).changed
    result = any_store.save(ADDRESS.upper(), cert)
    assert (result.check.reason, result.changed) == ("ok", False)
    assert result.location == any_store.location(ADDRESS)
    assert any_store.history(ADDRESS) == [], "nothing happened, so nothing is recorded"


def test_newer_certificates_replace_and_the_history_says_when_and_why(any_store, make_cert) -> None:
    first, second, third = (make_cert(days_ago=d) for d in (30, 10, 1))
    before = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)
    for cert in (first, second, third):
        result = any_store.save(ADDRESS, cert)
        assert (result.check.reason, result.changed) == ("ok", True)
    assert any_store.save(ADDRESS, second).check.reason == "older-than-stored"
    assert any_store.get(ADDRESS) == third
    history = any_store.history(ADDRESS.upper())
    assert [(e.sha256, e.event) for e in history] == [  # newest first
        (fingerprint(second), Why.REFUSED_OLDER),
        (fingerprint(second), Why.REPLACED),
        (fingerprint(first), Why.REPLACED),
    ]
    assert [e.at for e in history] == sorted((e.at for e in history), reverse=True)
    assert [(e.issuer, e.not_before) for e in history[1:]] == [
        (c.issuer.rfc4514_string(), c.not_valid_before_utc) for c in (second, first)
    ], "each entry describes its certificate"
    assert all(before < e.at < dt.datetime.now(dt.UTC) + dt.timedelta(minutes=5) for e in history)
    for entry, cert in zip(history[1:], (second, first), strict=True):
        assert entry.der == cert.public_bytes(serialization.Encoding.DER), "exact DER kept"


def test_a_revoked_certificate_is_replaced_even_by_an_older_one(any_store, make_cert) -> None:
    revoked, older = make_cert(days_ago=1), make_cert(days_ago=30)
    assert any_store.save(ADDRESS, revoked).changed
    result = any_store.save(ADDRESS, older, current_revoked=True)
    assert (result.check.reason, result.changed) == ("ok", True)
    assert any_store.get(ADDRESS) == older
    [entry] = any_store.history(ADDRESS)
    assert (entry.sha256, entry.event) == (fingerprint(revoked), Why.REVOKED)


def test_listings_come_sorted_and_filtered_by_expiry(any_store, root) -> None:
    soon = NOW + dt.timedelta(days=10)

    def cert(address: str, days_left: int, days_ago: float = 1) -> x509.Certificate:
        return pki.make_leaf(
            root,
            address,
            key_type="ec",
            cn="",
            not_before=NOW - dt.timedelta(days=days_ago),
            not_after=NOW + dt.timedelta(days=days_left),
        ).cert

    certs = {
        "zed@example.com": cert("zed@example.com", 400),
        "amy@example.com": cert("amy@example.com", 5),
        "bob@example.org": cert("bob@example.org", 30),
    }
    for address, c in certs.items():
        assert any_store.save(address, c).changed
    listed = any_store.list()
    assert [e.email for e in listed] == sorted(certs)
    for entry in listed:
        c = certs[entry.email]
        assert entry.sha256 == fingerprint(c)
        assert entry.issuer == c.issuer.rfc4514_string()
        assert entry.not_after == c.not_valid_after_utc
    assert [e.email for e in any_store.list(soon)] == ["amy@example.com"]
    # amy renews: the listing follows at once
    renewed = cert("amy@example.com", 365, days_ago=0.5)
    assert any_store.save("amy@example.com", renewed).changed
    assert any_store.list(soon) == []
    assert {e.sha256 for e in any_store.list()} == {
        fingerprint(c) for c in (certs["zed@example.com"], renewed, certs["bob@example.org"])
    }


def test_restored_history_is_kept_verbatim_and_once(any_store, make_cert) -> None:
    old, current = make_cert(days_ago=40), make_cert(days_ago=2)
    when = dt.datetime(2025, 3, 4, 5, 6, 7, 891011, tzinfo=dt.UTC)
    entries = [
        HistoryEntry(
            "ab" * 32,
            "CN=Elsewhere",
            None,
            None,
            Why.REFUSED_OLDER,
            when + dt.timedelta(days=1),
            "no copy",
        ),
        HistoryEntry.of(old, Why.REPLACED, when, "from elsewhere", pem_der(old)),
    ]
    assert any_store.save(ADDRESS, current).changed
    assert any_store.restore_history(ADDRESS, entries) == 2
    assert any_store.restore_history(ADDRESS, entries) == 0, "a second import adds nothing"
    history = any_store.history(ADDRESS)
    assert [e.key for e in history] == [e.key for e in entries]
    assert history[1].at == when and history[1].der == pem_der(old)
    assert history[1].issuer == old.issuer.rfc4514_string()
    assert any_store.get(ADDRESS) == current


def test_dump_holds_everything_in_address_order(any_store, make_cert) -> None:
    a, b = "a@example.com", "b@example.com"
    old_a, new_a, only_b = make_cert(a, days_ago=9), make_cert(a, days_ago=1), make_cert(b)
    for address, cert in ((b, only_b), (a, old_a), (a, new_a)):
        assert any_store.save(address, cert).changed
    records = list(any_store.dump())
    assert [r.address for r in records] == [a, b]
    assert records[0].current == pem_der(new_a) and records[1].current == pem_der(only_b)
    assert [(e.sha256, e.event, e.der) for e in records[0].history] == [
        (fingerprint(old_a), Why.REPLACED, pem_der(old_a))
    ]
    assert records[1].history == []


def test_open_store_follows_the_store_key(make_settings, database) -> None:
    assert isinstance(open_store(make_settings()), FolderStore)
    store = open_store(make_settings(**database))
    assert isinstance(store, PostgresStore) and store.kind == "postgresql"
    assert PASSWORD not in store.description, "the password never shows in messages"
    store.prepare()
    try:
        assert store.health().ok, store.health().detail
    finally:
        store.close()


def test_a_failing_store_is_store_error_never_a_verdict(backend, tmp_path, make_cert) -> None:
    """A folder that is a file, or a database nobody listens for: retry, and /healthz knows."""
    if backend[0] == "folder":
        blocker = tmp_path / "not-a-folder"
        blocker.write_text("")
        broken: CertStore = FolderStore(blocker / "certs")
    else:
        with socket.socket() as sock:  # a port that refuses connections
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        broken = PostgresStore(f"postgresql://collector@127.0.0.1:{port}/nothing", PASSWORD)
    try:
        result = broken.save(ADDRESS, make_cert())
        assert (result.check.reason, result.check.tempfail) == ("store-error", True)
        health = broken.health()
        assert (health.ok, health.reason, health.tempfail) == (False, "store-error", True)
        assert PASSWORD not in health.detail
    finally:
        broken.close()


# -- concurrent writers ---------------------------------------------------------------------


def _store_worker(spec: tuple[str, str], address: str, pem: bytes, barrier, results) -> None:
    """Runs in a spawned process: wait for the others, then store one certificate."""
    cert = x509.load_pem_x509_certificate(pem)
    store = open_backend(spec)
    barrier.wait(timeout=60)
    result = store.save(address, cert)
    store.close()
    results.put((pem, result.check.reason, result.changed))


def test_concurrent_writers_leave_the_newest_and_complete_history(backend, make_cert) -> None:
    count = 8
    certs = [make_cert(days_ago=day) for day in range(1, count + 1)]  # distinct notBefore
    pems = [pem_of(c) for c in certs]
    open_backend(backend).prepare()  # as gunicorn's master does before the workers start
    ctx = multiprocessing.get_context("spawn")
    barrier, results = ctx.Barrier(count), ctx.Queue()
    workers = [
        ctx.Process(target=_store_worker, args=(backend, ADDRESS, pem, barrier, results))
        for pem in pems
    ]
    for worker in workers:
        worker.start()
    path = Path(backend[1]) / f"{ADDRESS}.crt"
    try:
        while backend[0] == "folder" and any(w.is_alive() for w in workers):
            try:  # a reader of the folder never sees a torn file
                data = path.read_bytes()
            except FileNotFoundError:
                continue
            assert data in pems, "a reader saw a partial or foreign file"
    finally:
        for worker in workers:
            worker.join(timeout=60)
    assert [w.exitcode for w in workers] == [0] * count
    outcomes = [results.get(timeout=10) for _ in workers]
    stored = {pem for pem, reason, changed in outcomes if reason == "ok" and changed}
    refused = {pem for pem, reason, _ in outcomes if reason == "older-than-stored"}
    assert stored | refused == set(pems) and not stored & refused
    newest = pems[0]
    store = open_backend(backend)
    try:
        assert pem_of(store.get(ADDRESS)) == newest, "the newest certificate wins in any order"
        assert newest in stored
        history = store.history(ADDRESS)
    finally:
        store.close()
    by_sha = {fingerprint(c): pem_of(c) for c in certs}
    replaced = {by_sha[e.sha256] for e in history if e.event == Why.REPLACED}
    assert replaced == stored - {newest}, "every replaced certificate is in the history"
    assert sorted(by_sha[e.sha256] for e in history if e.event == Why.REFUSED_OLDER) == sorted(
        refused
    ), "every refusal is in the history, once"
    if backend[0] == "folder":
        kept = {p.read_bytes() for p in (Path(backend[1]) / HISTORY).glob("*.crt")}
        assert kept == stored - {newest}
        assert_clean(Path(backend[1]), [ADDRESS])


# -- through the pipeline -------------------------------------------------------------------


@pytest.fixture(scope="module")
def mail(dns_server, tmp_path_factory: pytest.TempPathFactory) -> MailFactory:
    return MailFactory.create(dns_server, tmp_path_factory.mktemp("certstore-pki"))


@pytest.fixture
def make_collector(make_settings, mail) -> Iterator[Callable[..., Collector]]:
    """Collectors as the service builds them; their stores are closed after the test."""
    built: list[Collector] = []

    def build(**overrides: str) -> Collector:
        settings = make_settings(trusted_certs=str(mail.ca_file), **overrides)
        built.append(create_app(settings).extensions["smime_collector"].collector)
        return built[-1]

    yield build
    for collector in built:
        collector.store.close()


@pytest.fixture(params=BACKENDS)
def backend_keys(request) -> dict[str, str]:
    """Configuration keys selecting each backend (a fresh database for postgresql)."""
    return {} if request.param == "folder" else request.getfixturevalue("database")


def test_pipeline_rejects_an_unsafe_address_and_writes_nothing(
    tmp_path, make_collector, mail
) -> None:
    """``a/b`` is a valid local part (RFC 5322 atext), and the certificate is for it."""
    address = "a/b@example.com"
    collector = make_collector()
    raw = mail.signed(address)
    assert mail.identity(address).email == address
    before = all_names(tmp_path)
    verdict = collector.read_smime_email(raw)
    assert (verdict.outcome, verdict.reason, verdict.location) == (
        Outcome.REJECTED,
        "unsafe-address",
        None,
    )
    written = all_names(collector.store.folder)
    assert [n for n in written if not n.startswith(JOURNAL_DIR)] == []  # only the verdict kept
    assert set(all_names(tmp_path)) - set(before) - {"webapp.log"} <= {
        f"certs/{name}" for name in written
    } | {"certs"}


def test_the_database_holds_what_the_folder_cannot_name(make_collector, mail, database) -> None:
    """File-name safety is the folder's: the database stores ``a/b@...`` like any address."""
    address = "a/b@example.com"
    collector = make_collector(**database)
    verdict = collector.read_smime_email(mail.signed(address))
    assert (verdict.outcome, verdict.location) == (Outcome.STORED, f"postgresql:{address}")
    assert collector.store.get(address) == mail.identity(address).cert


def test_pipeline_history_through_messages(make_collector, mail, backend_keys) -> None:
    collector = make_collector(**backend_keys)
    old = mail.leaf(ADDRESS, NOW - dt.timedelta(days=20))
    new = mail.leaf(ADDRESS, NOW - dt.timedelta(days=2))
    verdicts = [
        collector.read_smime_email(mail.signed(ADDRESS, signer=signer))
        for signer in (old, old, new, old)
    ]
    assert [(v.outcome.value, v.reason) for v in verdicts] == [
        ("stored", "ok"),
        ("unchanged", "ok"),
        ("stored", "ok"),
        ("rejected", "older-than-stored"),
    ]
    store = collector.store
    assert verdicts[0].location == store.location(ADDRESS)
    assert store.get(ADDRESS) == new.cert
    assert [(e.sha256, e.event) for e in store.history(ADDRESS)] == [
        (fingerprint(old.cert), Why.REFUSED_OLDER),
        (fingerprint(old.cert), Why.REPLACED),
    ]
    if isinstance(store, FolderStore):
        folder = store.folder
        assert (folder / f"{ADDRESS}.crt").read_bytes() == new.cert_pem()
        assert sorted(p.name for p in (folder / HISTORY).iterdir()) == [
            f"{ADDRESS}.{fingerprint(old.cert)}.crt",
            f"{ADDRESS}.jsonl",
        ]


# -- read-only and full file systems (real tmpfs mounts) -----------------------------------


def _run(*cmd: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=30)


@pytest.fixture
def tmpfs() -> Iterator[Callable[[Path, str], Path]]:
    """Mount a tmpfs with options at a path; always unmounted afterwards."""
    mounted: list[Path] = []

    def mount(path: Path, options: str) -> Path:
        if os.geteuid() != 0 or not shutil.which("mount"):
            pytest.skip("mounting a tmpfs needs root and mount(8)")
        path.mkdir(parents=True, exist_ok=True)
        proc = _run("mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path))
        if proc.returncode != 0:
            pytest.skip(f"mount -t tmpfs is not permitted here: {proc.stderr.strip()}")
        mounted.append(path)
        return path

    yield mount
    for path in reversed(mounted):
        if _run("umount", str(path)).returncode != 0:
            _run("umount", "-l", str(path))


def remount_read_only(path: Path) -> None:
    proc = _run("mount", "-o", "remount,ro", str(path))
    assert proc.returncode == 0, proc.stderr
    with pytest.raises(OSError) as info:  # even root cannot write now
        (path / "probe").write_bytes(b"x")
    assert info.value.errno == errno.EROFS


def fill_up(folder: Path) -> None:
    """Write a dot-file until the file system is full (ENOSPC)."""
    fd = os.open(folder / ".filler", os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        chunk = b"\0" * 4096
        while True:
            try:
                os.write(fd, chunk)
            except OSError as exc:
                assert exc.errno == errno.ENOSPC
                break
    finally:
        os.close(fd)


def test_read_only_folder_is_store_error_and_503(tmp_path, tmpfs, make_collector, mail) -> None:
    folder = tmpfs(tmp_path / "certs", "size=1m,mode=0755")
    collector = make_collector()
    assert collector.store.folder == folder
    old = mail.leaf(ADDRESS, NOW - dt.timedelta(days=20))
    assert collector.read_smime_email(mail.signed(ADDRESS, signer=old)).outcome is Outcome.STORED
    remount_read_only(folder)
    before = all_names(folder)
    newer = mail.signed(ADDRESS, signer=mail.leaf(ADDRESS, NOW - dt.timedelta(days=1)))
    verdict = collector.read_smime_email(newer)
    assert (verdict.outcome, verdict.reason) == (Outcome.TEMPFAIL, "store-error")
    assert "Read-only file system" in verdict.detail
    fresh = mail.signed("new@example.com")
    app = create_app(collector.settings)
    response = post_batch(app.test_client(), [relay_event(fresh)])
    assert response.status_code == 503
    assert all_names(folder) == before
    assert (folder / f"{ADDRESS}.crt").read_bytes() == old.cert_pem()


def test_disk_full_is_store_error_and_nothing_torn(tmp_path, tmpfs, make_cert) -> None:
    folder = tmpfs(tmp_path / "certs", "size=1m,mode=0755")
    store = FolderStore(folder)
    old = make_cert(days_ago=20)
    assert store.save(ADDRESS, old).changed
    fill_up(folder)
    for address, cert in (
        (ADDRESS, make_cert(days_ago=1)),
        ("new@example.com", make_cert("new@example.com")),
    ):
        result = store.save(address, cert)
        assert (result.check.reason, result.check.tempfail) == ("store-error", True)
        assert "No space left on device" in result.check.detail
    assert (folder / f"{ADDRESS}.crt").read_bytes() == pem_of(old)
    (folder / ".filler").unlink()
    assert_clean(folder, [ADDRESS])
    # space is back: the retry the relay makes succeeds
    assert store.save("new@example.com", make_cert("new@example.com")).changed


def test_disk_full_through_the_pipeline_is_503(tmp_path, tmpfs, make_collector, mail) -> None:
    folder = tmpfs(tmp_path / "certs", "size=1m,mode=0755")
    collector = make_collector()
    raw = mail.signed("full@example.com")
    fill_up(folder)
    verdict = collector.read_smime_email(raw)
    assert (verdict.outcome, verdict.reason) == (Outcome.TEMPFAIL, "store-error")
    response = post_batch(create_app(collector.settings).test_client(), [relay_event(raw)])
    assert response.status_code == 503
    (folder / ".filler").unlink()
    assert_clean(folder, [])


# -- the folder's sidecar index ---------------------------------------------------------------


def listed(store: FolderStore) -> dict[str, str]:
    return {e.email: e.sha256 for e in store.list()}


def test_the_index_follows_changes_made_beside_the_service(store, make_cert) -> None:
    """Files added, removed or replaced by hand show in the next listing; the index never
    outlives the files it describes."""
    a, b, c = "a@example.com", "b@example.com", "c@example.com"
    cert_a, cert_b, cert_c = make_cert(a), make_cert(b), make_cert(c)
    assert store.save(a, cert_a).changed and store.save(b, cert_b).changed
    assert listed(store) == {a: fingerprint(cert_a), b: fingerprint(cert_b)}
    assert (store.folder / INDEX / "certs.sqlite").is_file()
    (store.folder / f"{c}.crt").write_bytes(pem_of(cert_c))  # copied in by an operator
    (store.folder / f"{b}.crt").unlink()
    newer_a = make_cert(a, days_ago=0.5)
    tmp = store.folder / "replacement.tmp"
    tmp.write_bytes(pem_of(newer_a))
    tmp.rename(store.folder / f"{a}.crt")  # replaced by another tool's atomic write
    assert listed(store) == {a: fingerprint(newer_a), c: fingerprint(cert_c)}


def test_an_edit_in_place_shows_at_the_periodic_full_check(store, make_cert, monkeypatch) -> None:
    a = "a@example.com"
    first, second = make_cert(a, days_ago=3), make_cert(a, days_ago=1)
    assert store.save(a, first).changed
    assert listed(store) == {a: fingerprint(first)}
    path = store.folder / f"{a}.crt"
    with path.open("r+b") as handle:  # same inode: cp over an existing file does this
        handle.write(pem_of(second))
        handle.truncate()
    # The folder's own mtime did not change; the full check every FULL_CHECK_SECONDS finds it.
    from smime_collector.store import folderindex

    monkeypatch.setattr(folderindex, "FULL_CHECK_SECONDS", 0)
    assert listed(store) == {a: fingerprint(second)}


def test_a_damaged_or_foreign_index_is_rebuilt(store, make_cert) -> None:
    a = "a@example.com"
    cert = make_cert(a)
    assert store.save(a, cert).changed
    store.close()
    index = store.folder / INDEX / "certs.sqlite"
    for name in ("certs.sqlite-wal", "certs.sqlite-shm"):
        with contextlib.suppress(FileNotFoundError):
            (store.folder / INDEX / name).unlink()
    index.write_bytes(b"this is not a database" * 100)
    fresh = FolderStore(store.folder)
    assert listed(fresh) == {a: fingerprint(cert)}
    fresh.close()
    shutil.rmtree(store.folder / INDEX)
    again = FolderStore(store.folder)
    assert listed(again) == {a: fingerprint(cert)}
    again.close()


def test_a_corrupt_certificate_file_is_never_listed(store, make_cert) -> None:
    good = make_cert()
    assert store.save(ADDRESS, good).changed
    (store.folder / "broken@example.com.crt").write_bytes(b"-----BEGIN CERTIFICATE-----\ntorn")
    assert listed(store) == {ADDRESS: fingerprint(good)}


def test_listing_without_a_writable_index_reads_the_files(store, make_cert) -> None:
    """A folder the index cannot live in (here: ``.index`` is a file) still lists."""
    cert = make_cert()
    assert store.save(ADDRESS, cert).changed
    store.close()
    shutil.rmtree(store.folder / INDEX)
    (store.folder / INDEX).write_text("in the way")
    fresh = FolderStore(store.folder)
    assert listed(fresh) == {ADDRESS: fingerprint(cert)}
    assert fresh.save("other@example.com", make_cert("other@example.com")).changed
    assert set(listed(fresh)) == {ADDRESS, "other@example.com"}


def test_listing_parses_only_what_changed(store, make_cert, monkeypatch) -> None:
    """The index answers; a file is parsed only when it is new or replaced."""
    from smime_collector.store import folderindex

    certs = {f"u{i}@example.com": make_cert(f"u{i}@example.com") for i in range(20)}
    for address, cert in certs.items():
        (store.folder / f"{address}.crt").parent.mkdir(exist_ok=True)
        (store.folder / f"{address}.crt").write_bytes(pem_of(cert))
    parsed: list[bytes] = []
    real = folderindex.x509.load_pem_x509_certificate

    def counting(data: bytes) -> x509.Certificate:
        parsed.append(data)
        return real(data)

    monkeypatch.setattr(folderindex.x509, "load_pem_x509_certificate", counting)
    assert len(store.list()) == 20 and len(parsed) == 20
    old = time.time() - 10  # out of the racy window, as a folder left alone would be
    os.utime(store.folder, (old, old))
    parsed.clear()
    assert len(store.list()) == 20 and parsed == [], "nothing changed: nothing parsed"
    assert store.save("new@example.com", make_cert("new@example.com")).changed
    parsed.clear()
    assert len(store.list()) == 21 and parsed == [], "the store's own writes are indexed"


# -- what only the database has -------------------------------------------------------------


@pytest.fixture
def database_url(postgres: Postgres) -> str:
    return postgres.url(postgres.new_database())


def test_hosts_starting_together_migrate_once(database_url) -> None:
    """Eight processes prepare one empty database at once: the advisory lock lets one create
    the schema; the others find it done."""
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(8) as pool:
        found = pool.map(_prepare, [database_url] * 8)
    assert sorted(found) == [0] + [schema.VERSION] * 7
    with psycopg.connect(database_url, password=PASSWORD) as conn:
        versions = conn.execute("SELECT version FROM schema_version").fetchall()
    assert versions == [(v,) for v in range(1, schema.VERSION + 1)]


def _prepare(url: str) -> int:
    with psycopg.connect(url, password=PASSWORD, autocommit=True) as conn:
        return schema.migrate(conn)


def test_a_schema_newer_than_the_code_is_refused(database_url, make_cert) -> None:
    store = PostgresStore(database_url, PASSWORD)
    store.prepare()
    with psycopg.connect(database_url, password=PASSWORD, autocommit=True) as conn:
        conn.execute("INSERT INTO schema_version (version) VALUES (%s)", (schema.VERSION + 1,))
    newer_elsewhere = PostgresStore(database_url, PASSWORD)
    with pytest.raises(StoreUnavailable) as info:
        newer_elsewhere.prepare()
    assert "newer than this collector" in str(info.value)
    result = newer_elsewhere.save(ADDRESS, make_cert())
    assert (result.check.reason, result.check.tempfail) == ("store-error", True)
    store.close()
    newer_elsewhere.close()


def test_the_history_table_refuses_changes(database_url, make_cert) -> None:
    store = PostgresStore(database_url, PASSWORD)
    store.prepare()
    store.save(ADDRESS, make_cert(days_ago=9))
    store.save(ADDRESS, make_cert(days_ago=1))
    store.close()
    with psycopg.connect(database_url, password=PASSWORD, autocommit=True) as conn:
        for statement in (
            "UPDATE history SET why = 'revoked'",
            "DELETE FROM history",
            "TRUNCATE history",
        ):
            with pytest.raises(psycopg.errors.RaiseException, match="append-only"):
                conn.execute(statement)
        assert conn.execute("SELECT count(*) FROM history").fetchone() == (1,)


def test_a_read_only_database_is_unhealthy(database_url, make_cert) -> None:
    """What a collector pointed at a standby sees: /healthz fails store, saves tempfail."""
    name = database_url.rsplit("/", 1)[1]
    PostgresStore(database_url, PASSWORD).prepare()
    with psycopg.connect(database_url, password=PASSWORD, autocommit=True) as conn:
        conn.execute(f'ALTER DATABASE "{name}" SET default_transaction_read_only = on')
    store = PostgresStore(database_url, PASSWORD)
    try:
        health = store.health()
        assert (health.ok, health.tempfail) == (False, True)
        assert health.detail.endswith("is read-only (a standby?)"), health.detail
        result = store.save(ADDRESS, make_cert())
        assert (result.check.reason, result.check.tempfail) == ("store-error", True)
    finally:
        store.close()


# -- revocation: exact bytes, issuers, markers, retiring (both backends) ---------------------


def test_exact_bytes_and_issuers_are_kept(any_store, make_cert, root) -> None:
    cert = make_cert()
    der = pem_der(cert)
    issuers = [pem_der(root.cert)]
    assert any_store.save(ADDRESS, cert, der=der, chain=issuers).changed
    assert any_store.get_der(ADDRESS.upper()) == der
    assert any_store.chain(ADDRESS) == issuers
    assert any_store.addresses() == [ADDRESS]
    assert any_store.get_der("nobody@example.com") is None
    assert any_store.chain("nobody@example.com") == []


def test_a_certificate_found_revoked_is_refused_and_never_listed(any_store, make_cert) -> None:
    revoked, fresh = make_cert(days_ago=1), make_cert(days_ago=5)
    assert any_store.save(ADDRESS, revoked).changed
    assert not any_store.is_revoked(ADDRESS, revoked)
    any_store.mark_revoked(ADDRESS, revoked, "CRL says so")
    assert any_store.is_revoked(ADDRESS, revoked)
    assert any_store.list() == [], "a revoked certificate is never listed"
    result = any_store.save(ADDRESS, revoked)
    assert (result.check.reason, result.changed) == ("revoked", False)
    # its owner's older but valid certificate replaces it (the pipeline's path)
    assert any_store.save(ADDRESS, fresh, current_revoked=True).changed
    assert [e.email for e in any_store.list()] == [ADDRESS]
    assert [(e.sha256, e.event) for e in any_store.history(ADDRESS)] == [
        (fingerprint(revoked), Why.REVOKED)
    ]


def test_a_lookup_never_serves_a_revoked_certificate_under_another_spelling(
    any_store, make_cert
) -> None:
    cert = make_cert()
    assert any_store.save(ADDRESS, cert).changed
    spellings = (ADDRESS, f" {ADDRESS}", f"{ADDRESS.upper()}\t")
    assert {stored_pem(any_store, typed) for typed in spellings} == {
        cert.public_bytes(serialization.Encoding.PEM)
    }
    any_store.mark_revoked(ADDRESS, cert, "CRL says so")
    for typed in spellings:
        assert any_store.is_revoked(typed, cert), repr(typed)
        assert stored_pem(any_store, typed) is None, repr(typed)


def test_retiring_a_revoked_certificate(any_store, make_cert) -> None:
    cert, other = make_cert(days_ago=2), make_cert(days_ago=1)
    assert any_store.save(ADDRESS, cert).changed
    assert not any_store.retire_revoked(ADDRESS, other, "not the one in place")
    assert any_store.retire_revoked(ADDRESS, cert, "revoked: keyCompromise")
    assert any_store.get(ADDRESS) is None and any_store.addresses() == []
    assert any_store.list() == []
    assert any_store.is_revoked(ADDRESS, cert)
    [entry] = any_store.history(ADDRESS)
    assert (entry.sha256, entry.event, entry.detail) == (
        fingerprint(cert),
        Why.REVOKED,
        "revoked: keyCompromise",
    )
    assert entry.der == pem_der(cert)
    assert any_store.save(ADDRESS, cert).check.reason == "revoked", "never stored again"
    assert any_store.save(ADDRESS, other).changed, "its owner's next one is welcome"
    [record] = list(any_store.dump())
    assert record.current == pem_der(other)
    assert [e.event for e in record.history] == [Why.REVOKED]


def test_a_writer_that_waited_for_the_row_sees_its_new_version(database_url, make_cert) -> None:
    """Saves lock the address's row; one that waited for another writer must decide against
    the certificate that writer left, never against "no row" (a join under FOR UPDATE would
    lose the row on its re-check, and a third writer could then slip in unnoticed)."""
    old, new = make_cert(days_ago=9), make_cert(days_ago=1)
    store = PostgresStore(database_url, PASSWORD)
    store.prepare()
    assert store.save(ADDRESS, old).changed
    store.save(ADDRESS, new)  # puts the new certificate's row in place; the address moves on
    with psycopg.connect(database_url, password=PASSWORD, autocommit=True) as conn:
        conn.execute("UPDATE addresses SET sha256 = %s", (fingerprint(old),))  # back to old
    holder = psycopg.connect(database_url, password=PASSWORD)
    waiter = psycopg.connect(database_url, password=PASSWORD)
    seen: list[x509.Certificate | None] = []
    try:
        holder.execute("SELECT 1 FROM addresses WHERE address = %s FOR UPDATE", (ADDRESS,))
        holder.execute("UPDATE addresses SET sha256 = %s", (fingerprint(new),))
        thread = threading.Thread(
            target=lambda: seen.append(PostgresStore._locked_current(waiter, ADDRESS))
        )
        thread.start()
        thread.join(timeout=1)
        assert thread.is_alive(), "the second writer waits for the row lock"
        holder.commit()
        thread.join(timeout=30)
        assert seen == [new]
    finally:
        waiter.rollback()
        holder.close()
        waiter.close()
        store.close()


# -- the operator page's reads: search, stats and the verdict journal (both backends) -------


def test_search_pages_and_stats_come_from_the_index(any_store, root) -> None:
    def cert(address: str, days_left: int) -> x509.Certificate:
        return pki.make_leaf(
            root,
            address,
            key_type="ec",
            cn="",
            not_before=NOW - dt.timedelta(days=1),
            not_after=(NOW + dt.timedelta(days=days_left)).replace(microsecond=0),
        ).cert

    certs = {f"user{i}@example.com": cert(f"user{i}@example.com", 10 + 10 * i) for i in range(5)}
    certs["zoe@other.org"] = cert("zoe@other.org", 400)
    for address, c in certs.items():
        assert any_store.save(address, c).changed
    page = any_store.search("example.com", offset=1, limit=2)
    assert (page.total, [e.email for e in page.entries]) == (
        5,
        ["user1@example.com", "user2@example.com"],
    )
    assert [e.email for e in any_store.search("USER4").entries] == ["user4@example.com"]
    assert [e.email for e in any_store.search("certstore root").entries] == sorted(certs)
    sha = fingerprint(certs["zoe@other.org"])
    colons = ":".join(sha[i : i + 2] for i in range(0, 8, 2))
    assert [e.email for e in any_store.search(colons).entries] == ["zoe@other.org"]
    assert any_store.search("no_such%thing").total == 0
    soon = NOW + dt.timedelta(days=25)
    assert [e.email for e in any_store.search("", 0, 10, soon).entries] == [
        "user0@example.com",
        "user1@example.com",
    ]
    stats = any_store.stats(soon)
    assert (stats.count, stats.expiring) == (6, 2)
    assert stats.earliest_expiry == certs["user0@example.com"].not_valid_after_utc
    any_store.mark_revoked("user0@example.com", certs["user0@example.com"], "revoked")
    assert any_store.stats(soon).count == 5, "a revoked certificate is not counted"
    assert any_store.search("user0").total == 0


def test_the_verdict_journal(any_store) -> None:
    from smime_collector.journal import JournalEntry

    noon = dt.datetime.now(dt.UTC).replace(hour=12, minute=0, second=0, microsecond=0)
    for n in range(7):
        any_store.record(
            JournalEntry(
                noon - dt.timedelta(hours=7 * (6 - n)),
                "stored" if n % 2 else "rejected",
                "ok" if n % 2 else "expired",
                f"u{n}@example.org",
                "detail",
                "sparkpost",
                f"<{n}@x>",
                "rid",
                "Envelope@Sender.example" if n == 3 else None,
            )
        )
    page = any_store.verdicts(limit=3)
    assert [e.email for e in page.entries] == ["u6@example.org", "u5@example.org", "u4@example.org"]
    assert page.more
    last = any_store.verdicts(offset=6, limit=3)
    assert [e.email for e in last.entries] == ["u0@example.org"] and not last.more
    assert [e.email for e in any_store.verdicts(outcome="stored").entries] == [
        "u5@example.org",
        "u3@example.org",
        "u1@example.org",
    ]
    assert [e.email for e in any_store.verdicts("envelope@sender").entries] == ["u3@example.org"]
    first = any_store.verdicts(limit=1).entries[0]
    assert (first.at, first.message_id, first.intake) == (noon, "<6@x>", "sparkpost")
    counts = any_store.verdict_counts(noon - dt.timedelta(hours=14))
    assert counts == {("rejected", "expired"): 2, ("stored", "ok"): 1}


# -- the answer memory for replayed deliveries (both backends) -------------------------------


class Clock:
    """The answer memory's clock, moved by the test instead of waiting."""

    def __init__(self) -> None:
        self.now = 1_000_000_000.0

    def __call__(self) -> float:
        return self.now


def answer_store(spec: tuple[str, str], **bounds: Any) -> CertStore:
    """A store of ``spec`` whose answer memory has the given bounds and clock, prepared."""
    kind, where = spec
    store: CertStore = (
        FolderStore(Path(where), **bounds)
        if kind == "folder"
        else PostgresStore(where, PASSWORD, **bounds)
    )
    store.prepare()
    return store


def remembered_rows(spec: tuple[str, str]) -> int:
    """How many answers the backend holds, read behind its back."""
    kind, where = spec
    if kind == "folder":
        with contextlib.closing(sqlite3.connect(Path(where) / ".answers.sqlite3")) as db:
            return db.execute("SELECT count(*) FROM answers").fetchone()[0]
    with psycopg.connect(where, password=PASSWORD) as conn:
        return conn.execute("SELECT count(*) FROM answers").fetchone()[0]


def verdict(outcome: Outcome = Outcome.STORED) -> Verdict:
    reason = Reason.DNS_ERROR if outcome is Outcome.TEMPFAIL else Reason.OK
    return Verdict(outcome, reason, "bob@example.org", "somewhere", "a detail")


def test_a_final_answer_is_recalled_for_its_lifetime(backend) -> None:
    clock = Clock()
    store = answer_store(backend, remember_seconds=60, answer_clock=clock)
    try:
        store.remember_answer("mailgun", "token-1", verdict())
        store.remember_answer("mailgun", "token-2", verdict(Outcome.TEMPFAIL))
        store.remember_answer("ses", "id-1", verdict(Outcome.REJECTED))
        assert store.recall_answer("mailgun", "token-1") == Verdict(
            Outcome.STORED, Reason.OK, "bob@example.org"
        )
        assert store.recall_answer("mailgun", "token-2") is None, "tempfail: the retry is judged"
        assert store.recall_answer("ses", "id-1").outcome is Outcome.REJECTED
        assert store.recall_answer("ses", "token-1") is None, "doors do not share keys"
        assert store.recall_answer("mailgun", "token-3") is None
        clock.now += 60
        assert store.recall_answer("mailgun", "token-1") is not None
        clock.now += 1
        assert store.recall_answer("mailgun", "token-1") is None
        store.remember_answer("mailgun", "token-4", verdict())
        assert remembered_rows(backend) == 1, "expired answers are dropped, not only hidden"
    finally:
        store.close()


def test_the_memory_keeps_at_most_its_limit_dropping_the_oldest(backend) -> None:
    clock = Clock()
    store = answer_store(backend, max_remembered=3, answer_clock=clock)
    try:
        for n in range(5):
            clock.now += 1
            store.remember_answer("ses", f"id-{n}", verdict())
        assert [store.recall_answer("ses", f"id-{n}") is not None for n in range(5)] == [
            False, False, True, True, True,
        ]  # fmt: skip
        store.remember_answer("ses", "id-2", verdict(Outcome.REJECTED))  # answered again: newest
        store.remember_answer("ses", "id-5", verdict())
        assert [store.recall_answer("ses", f"id-{n}") is not None for n in range(2, 6)] == [
            True, False, True, True,
        ]  # fmt: skip
        assert store.recall_answer("ses", "id-2").outcome is Outcome.REJECTED
        assert remembered_rows(backend) == 3
    finally:
        store.close()


def test_the_memory_holds_any_key_a_provider_sends(backend) -> None:
    store = answer_store(backend)
    keys = ["x" * 100_000, "", "ключ\x00'; DROP TABLE answers; --", "a\ud800b"]
    try:
        for n, key in enumerate(keys):
            store.remember_answer("mailgun", key, Verdict(Outcome.REJECTED, Reason.OK, f"{n}@x"))
        assert [store.recall_answer("mailgun", key).email for key in keys] == [
            "0@x", "1@x", "2@x", "3@x",
        ]  # fmt: skip
    finally:
        store.close()


def _remember_many(spec: tuple[str, str], worker: int, barrier) -> None:
    """Runs in a spawned process (another worker, or another host): remember 50 answers."""
    store = open_backend(spec)
    barrier.wait(timeout=60)
    for n in range(50):
        store.remember_answer("mailgun", f"w{worker}-{n}", verdict(Outcome.UNCHANGED))
    store.close()


def test_answers_remembered_by_other_processes_are_recalled(backend) -> None:
    """Four processes remember at once (the folder's file locks, the database's rows); a
    fifth recalls every answer."""
    open_backend(backend).prepare()
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(4)
    workers = [
        ctx.Process(target=_remember_many, args=(backend, worker, barrier)) for worker in range(4)
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=120)
    assert [w.exitcode for w in workers] == [0] * 4
    store = open_backend(backend)
    try:
        found = [store.recall_answer("mailgun", f"w{w}-{n}") for w in range(4) for n in range(50)]
    finally:
        store.close()
    assert found == [Verdict(Outcome.UNCHANGED, Reason.OK, "bob@example.org")] * 200
    assert remembered_rows(backend) == 200


def test_an_unusable_memory_raises_store_unavailable(backend, tmp_path) -> None:
    """A damaged file, or a database whose table is gone: the caller judges as new."""
    store = answer_store(backend)
    if backend[0] == "folder":
        (Path(backend[1]) / ".answers.sqlite3").write_bytes(b"this is not a database" * 100)
    else:
        with psycopg.connect(backend[1], password=PASSWORD, autocommit=True) as conn:
            conn.execute("DROP TABLE answers")
    try:
        with pytest.raises(StoreUnavailable):
            store.remember_answer("mailgun", "t", verdict())
        with pytest.raises(StoreUnavailable):
            store.recall_answer("mailgun", "t")
        assert store.save(ADDRESS, pki.make_leaf(pki.make_root("R"), ADDRESS).cert).changed, (
            "the certificates are not affected"
        )
    finally:
        store.close()


def test_a_database_of_the_first_schema_gains_the_answer_table(database_url, make_cert) -> None:
    """A database made by the version before the answer memory: migrated in place at start-up
    (under the advisory lock), its certificates kept."""
    cert = make_cert()
    with psycopg.connect(database_url, password=PASSWORD, autocommit=True) as conn:
        conn.execute("CREATE TABLE schema_version (version integer PRIMARY KEY, "
                     "applied_at timestamptz NOT NULL DEFAULT now())")  # fmt: skip
        conn.execute(schema.STEPS[0])
        conn.execute("INSERT INTO schema_version (version) VALUES (1)")
        conn.execute(
            "INSERT INTO certificates (sha256, der, issuer, not_before, not_after) "
            "VALUES (%s, %s, 'x', now(), now())",
            (fingerprint(cert), pem_der(cert)),
        )
        conn.execute(
            "INSERT INTO addresses (address, sha256, not_after) VALUES (%s, %s, now())",
            (ADDRESS, fingerprint(cert)),
        )
    store = answer_store(("postgresql", database_url))
    try:
        with psycopg.connect(database_url, password=PASSWORD) as conn:
            assert schema.current_version(conn) == schema.VERSION == 2
        assert store.get(ADDRESS) == cert
        store.remember_answer("ses", "id", verdict())
        assert store.recall_answer("ses", "id") is not None
    finally:
        store.close()
