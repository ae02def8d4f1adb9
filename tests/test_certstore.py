"""The certificate folder, directly through CertStore and through the whole pipeline.

Durable atomic writes, nothing visible but ``<address>.crt``, planted symlinks, unsafe
addresses, no downgrade with history, concurrent writers in separate processes, and a read-only
or full file system (real tmpfs mounts; skipped with the reason where mounting is not allowed).
"""

from __future__ import annotations

import datetime as dt
import errno
import multiprocessing
import os
import shutil
import stat
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from smime_collector.pipeline import Collector
from smime_collector.store import folder as certstore
from smime_collector.store.folder import HISTORY, LOCKS, unsafe_address
from smime_collector.store.folder import FolderStore as CertStore
from smime_collector.store.folderjournal import JOURNAL_DIR
from smime_collector.trust import fingerprint
from smime_collector.verdict import Outcome
from tests import pki
from tests.helpers import post_batch, relay_event, visible_files
from tests.mailfactory import MailFactory
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


@pytest.fixture
def store(tmp_path: Path) -> CertStore:
    return CertStore(tmp_path / "certs")


def pem_of(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def all_names(folder: Path) -> list[str]:
    """Every entry below ``folder``, relative, sorted (dot entries included)."""
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def assert_clean(folder: Path, addresses: list[str]) -> None:
    """Only ``<address>.crt`` visible; the rest is .history/ and .locks/, no temp files."""
    assert visible_files(folder) == sorted(f"{a}.crt" for a in addresses)
    hidden = {p.name for p in folder.iterdir() if p.name.startswith(".")}
    assert hidden <= {HISTORY, LOCKS, JOURNAL_DIR}
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


# -- no downgrade ---------------------------------------------------------------------------


def test_an_older_certificate_does_not_replace_a_newer_one(store, make_cert) -> None:
    newer, older = make_cert(days_ago=1), make_cert(days_ago=30)
    assert store.save(ADDRESS, newer).changed
    path = store.folder / f"{ADDRESS}.crt"
    before = path.stat()
    result = store.save(ADDRESS, older)
    assert (result.check.reason, result.changed, result.check.tempfail) == (
        "older-than-stored",
        False,
        False,
    )
    assert path.read_bytes() == pem_of(newer)
    assert (path.stat().st_ino, path.stat().st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    assert not (store.folder / HISTORY).exists()


def test_the_same_certificate_again_is_unchanged_and_not_rewritten(store, make_cert) -> None:
    cert = make_cert()
    assert store.save(ADDRESS, cert).changed
    path = store.folder / f"{ADDRESS}.crt"
    before = path.stat()
    result = store.save(ADDRESS.upper(), cert)
    assert (result.check.reason, result.changed, result.location) == ("ok", False, str(path))
    assert (path.stat().st_ino, path.stat().st_mtime_ns) == (before.st_ino, before.st_mtime_ns)


def test_a_newer_certificate_replaces_and_the_old_one_goes_to_history(store, make_cert) -> None:
    first, second, third = (make_cert(days_ago=d) for d in (30, 10, 1))
    for cert in (first, second, third):
        result = store.save(ADDRESS, cert)
        assert (result.check.reason, result.changed) == ("ok", True)
    assert (store.folder / f"{ADDRESS}.crt").read_bytes() == pem_of(third)
    history = store.folder / HISTORY
    assert sorted(p.name for p in history.iterdir()) == sorted(
        f"{ADDRESS}.{fingerprint(c)}.crt" for c in (first, second)
    )
    for cert in (first, second):
        assert (history / f"{ADDRESS}.{fingerprint(cert)}.crt").read_bytes() == pem_of(cert)
    assert_clean(store.folder, [ADDRESS])


# -- concurrent writers ---------------------------------------------------------------------


def _store_worker(folder: str, address: str, pem: bytes, barrier, results) -> None:
    """Runs in a spawned process: wait for the others, then store one certificate."""
    cert = x509.load_pem_x509_certificate(pem)
    store = CertStore(Path(folder))
    barrier.wait(timeout=60)
    result = store.save(address, cert)
    results.put((pem, result.check.reason, result.changed))


def test_concurrent_writers_leave_one_whole_file_and_history(store, make_cert) -> None:
    count = 8
    certs = [make_cert(days_ago=day) for day in range(1, count + 1)]  # distinct notBefore
    pems = [pem_of(c) for c in certs]
    ctx = multiprocessing.get_context("spawn")
    barrier, results = ctx.Barrier(count), ctx.Queue()
    workers = [
        ctx.Process(target=_store_worker, args=(str(store.folder), ADDRESS, pem, barrier, results))
        for pem in pems
    ]
    for worker in workers:
        worker.start()
    path = store.folder / f"{ADDRESS}.crt"
    try:
        while any(w.is_alive() for w in workers):  # a reader never sees a torn file
            try:
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
    assert path.read_bytes() == newest, "the newest certificate wins whatever the order"
    assert newest in stored
    history = store.folder / HISTORY
    kept = {p.read_bytes() for p in history.iterdir()} if history.exists() else set()
    assert kept == stored - {newest}, "every replaced certificate is in the history"
    assert_clean(store.folder, [ADDRESS])


# -- through the pipeline -------------------------------------------------------------------


@pytest.fixture(scope="module")
def mail(dns_server, tmp_path_factory: pytest.TempPathFactory) -> MailFactory:
    return MailFactory.create(dns_server, tmp_path_factory.mktemp("certstore-pki"))


@pytest.fixture
def make_collector(make_settings, mail) -> Callable[..., Collector]:
    def build(**overrides: str) -> Collector:
        settings = make_settings(trusted_certs=str(mail.ca_file), **overrides)
        return create_app(settings).extensions["smime_collector"].collector

    return build


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


def test_pipeline_history_through_messages(make_collector, mail) -> None:
    collector = make_collector()
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
    folder = collector.store.folder
    assert (folder / f"{ADDRESS}.crt").read_bytes() == new.cert_pem()
    assert [p.name for p in (folder / HISTORY).iterdir()] == [
        f"{ADDRESS}.{fingerprint(old.cert)}.crt"
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
    folder = tmpfs(tmp_path / "certs", "size=64k,mode=0755")
    store = CertStore(folder)
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
    folder = tmpfs(tmp_path / "certs", "size=64k,mode=0755")
    collector = make_collector()
    raw = mail.signed("full@example.com")
    fill_up(folder)
    verdict = collector.read_smime_email(raw)
    assert (verdict.outcome, verdict.reason) == (Outcome.TEMPFAIL, "store-error")
    response = post_batch(create_app(collector.settings).test_client(), [relay_event(raw)])
    assert response.status_code == 503
    (folder / ".filler").unlink()
    assert_clean(folder, [])
