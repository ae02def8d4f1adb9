"""Fault injection: the DNS server down or failing, the certificate folder read-only or full.

Each fault must answer 503 (SparkPost retries the batch), log ``tempfail`` with the reason,
leave the folder as it was (no torn or partial file, no temp file, the stored certificate
byte for byte), and the retry after the fault is gone must store the certificate.

The DNS faults use a loopback DNS server of their own, stopped and started again on the same
port (one case through real gunicorn). The folder faults mount a tmpfs of their own: ``-o ro``
remounted, or a tiny ``size=`` filled up for ENOSPC. The tests run as root, so ``chmod`` would
not stop a write; a read-only or full file system does. Without permission to mount they skip
and say why; every mount is unmounted in teardown, also after a failure.
"""

from __future__ import annotations

import datetime as dt
import errno
import json
import shutil
import subprocess
import threading
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from dnslib.server import DNSLogger, DNSServer

from smime_collector.config import Settings
from tests import pki
from tests.conftest import write_ini
from tests.dnsserver import LoopbackDNS
from tests.helpers import TOKEN_HEADER, logged_verdicts, post_batch, relay_event, visible_files
from tests.mailfactory import MailFactory, dkim_sign
from tests.servers import start_gunicorn
from webapp import create_app

CAROL = "carol@faults.example"
DAVE = "dave@other-faults.example"
RETRY = {"message": "Temporary failure; please retry"}


# -- a DNS server that can go away and come back -----------------------------------------------


class RestartableDNS(LoopbackDNS):
    """The loopback DNS server, able to start again on the same port after ``stop()``, as a
    restarted resolver would (``LoopbackDNS.start`` always binds a new free port)."""

    def restart(self) -> None:
        logger = DNSLogger(logf=lambda _msg: None)
        self._servers = [
            DNSServer(self, address="127.0.0.1", port=self.port, logger=logger),
            DNSServer(self, address="127.0.0.1", port=self.port, tcp=True, logger=logger),
        ]
        self._stopping.clear()
        for srv in self._servers:
            thread = threading.Thread(
                target=srv.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
            )
            thread.start()
            self._threads.append(thread)


def _set_mode(mode: str) -> Callable[[LoopbackDNS], None]:
    def apply(server: LoopbackDNS) -> None:
        server.mode = mode

    return apply


#: fault name -> (break the DNS, mend it)
DNS_FAULTS: dict[str, tuple[Callable[[RestartableDNS], None], Callable[[RestartableDNS], None]]] = {
    "stopped": (RestartableDNS.stop, RestartableDNS.restart),
    "servfail": (_set_mode("servfail"), _set_mode("normal")),
    "silent": (_set_mode("drop"), _set_mode("normal")),
}


@pytest.fixture
def own_dns() -> Iterator[RestartableDNS]:
    server = RestartableDNS().start()
    yield server
    server.stop()


@pytest.fixture
def factory(tmp_path: Path, own_dns: RestartableDNS) -> MailFactory:
    return MailFactory.create(own_dns, tmp_path)


def settings_for(folder: Path, factory: MailFactory, certs: Path | None = None) -> Settings:
    values = {
        "x-messagesystems-webhook-token": "test-token",
        "user-certs-dir": str(certs or folder / "certs"),
        "log-file": str(folder / "webapp.log"),
        "dns-nameservers": factory.dns.nameserver,
        "dns-timeout": "1",
        "trusted-certs": str(factory.ca_file),
        "revocation-fetch": "no",
    }
    return Settings.from_mapping(values, folder, "test")


def fingerprint_of(path: Path) -> str:
    return x509.load_pem_x509_certificate(path.read_bytes()).fingerprint(hashes.SHA256()).hex()


def fingerprint(identity: pki.Identity) -> str:
    return identity.cert.fingerprint(hashes.SHA256()).hex()


def assert_nothing_torn(folder: Path) -> None:
    """Every certificate file, kept ones included, is one whole certificate; no temp file."""
    for path in folder.rglob("*"):
        assert not path.name.startswith(".tmp-"), f"left-over temp file {path}"
        if path.is_file() and path.suffix == ".crt":
            data = path.read_bytes()
            assert data.count(b"-----BEGIN CERTIFICATE-----") == 1, path
            assert data.endswith(b"-----END CERTIFICATE-----\n"), path
            x509.load_pem_x509_certificate(data)


# -- DNS faults --------------------------------------------------------------------------------


@pytest.mark.parametrize("fault", sorted(DNS_FAULTS))
def test_dns_fault_is_503_and_the_retried_batch_stores(fault, tmp_path, own_dns, factory) -> None:
    settings = settings_for(tmp_path, factory)
    client = create_app(settings).test_client()
    dave, carol = factory.signed(DAVE), factory.signed(CAROL)
    assert post_batch(client, [relay_event(dave)]).status_code == 200  # Dave's key now cached
    break_dns, mend_dns = DNS_FAULTS[fault]

    break_dns(own_dns)
    response = post_batch(client, [relay_event(dave), relay_event(carol)])
    assert response.status_code == 503
    assert response.get_json() == {**RETRY, "count": 2}
    assert visible_files(settings.user_certs_dir) == [f"{DAVE}.crt"]

    mend_dns(own_dns)
    response = post_batch(client, [relay_event(dave), relay_event(carol)])
    assert response.status_code == 200
    assert logged_verdicts(settings.log_file) == [
        ("stored", "ok", DAVE),
        ("unchanged", "ok", DAVE),  # judged before the tempfail, harmlessly judged again
        ("tempfail", "dns-error", CAROL),
        ("unchanged", "ok", DAVE),
        ("stored", "ok", CAROL),
    ]
    certs = settings.user_certs_dir
    assert visible_files(certs) == sorted([f"{DAVE}.crt", f"{CAROL}.crt"])
    assert fingerprint_of(certs / f"{CAROL}.crt") == fingerprint(factory.identity(CAROL))
    assert_nothing_torn(certs)


def _post(url: str, raw: bytes) -> int:
    request = urllib.request.Request(
        url,
        data=json.dumps([relay_event(raw)]).encode(),
        headers={"Content-Type": "application/json", TOKEN_HEADER: "test-token"},
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


@pytest.mark.slow
def test_dns_stopped_under_gunicorn_is_503_until_it_is_back(tmp_path, own_dns, factory) -> None:
    ini = write_ini(
        tmp_path / "webapp.ini",
        {
            "x-messagesystems-webhook-token": "test-token",
            "user-certs-dir": "certs",
            "log-file": "webapp.log",
            "dns-nameservers": own_dns.nameserver,
            "dns-timeout": "1",
            "trusted-certs": str(factory.ca_file),
        },
    )
    carol = factory.signed(CAROL)
    server = start_gunicorn(ini, tmp_path, workers=2)
    try:
        own_dns.stop()
        statuses = [_post(server.url, carol) for _ in range(3)]  # whichever worker answers
        own_dns.restart()
        retried = _post(server.url, carol)
        again = _post(server.url, carol)
    finally:
        server.stop()
    assert statuses == [503, 503, 503]
    assert (retried, again) == (200, 200)
    verdicts = logged_verdicts(tmp_path / "webapp.log")
    assert verdicts == [("tempfail", "dns-error", CAROL)] * 3 + [
        ("stored", "ok", CAROL),
        ("unchanged", "ok", CAROL),
    ]
    assert fingerprint_of(tmp_path / "certs" / f"{CAROL}.crt") == fingerprint(
        factory.identity(CAROL)
    )
    assert visible_files(tmp_path / "certs") == [f"{CAROL}.crt"]


# -- folder faults: a tmpfs of our own ---------------------------------------------------------


def _mount(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["mount", *args], capture_output=True, text=True, timeout=30)


def _unmount(target: Path) -> None:
    if subprocess.run(["umount", str(target)], capture_output=True, timeout=30).returncode:
        subprocess.run(["umount", "-l", str(target)], capture_output=True, timeout=30)


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Callable[[str], Path]]:
    """``tmpfs(size)`` mounts a fresh tmpfs under tmp_path and returns its path."""
    if shutil.which("mount") is None or shutil.which("umount") is None:
        pytest.skip("mount/umount are not installed: cannot make a read-only or full file system")
    mounted: list[Path] = []

    def mount(size: str) -> Path:
        target = tmp_path / f"tmpfs-{len(mounted)}"
        target.mkdir()
        proc = _mount("-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(target))
        if proc.returncode != 0:
            pytest.skip(f"not permitted to mount a tmpfs here: {proc.stderr.strip()}")
        mounted.append(target)
        return target

    try:
        yield mount
    finally:
        for target in reversed(mounted):
            _unmount(target)


def remount(target: Path, mode: str) -> None:
    proc = _mount("-o", f"remount,{mode}", str(target))
    assert proc.returncode == 0, proc.stderr


def snapshot(folder: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(folder)): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.suffix == ".crt"
    }


def versions(factory: MailFactory, address: str) -> tuple[pki.Identity, pki.Identity]:
    """Two certificates for ``address``: an older and a newer notBefore."""
    now = dt.datetime.now(dt.UTC)
    return (
        factory.leaf(address, now - dt.timedelta(days=20)),
        factory.leaf(address, now - dt.timedelta(days=2)),
    )


def signed_by(factory: MailFactory, address: str, identity: pki.Identity) -> bytes:
    domain = address.rpartition("@")[2]
    raw = factory.smime(address, identity)
    return dkim_sign(raw, factory.dkim_key(domain), domain, factory.selector)


def test_read_only_folder_is_503_and_nothing_changes(tmp_path, tmpfs, factory) -> None:
    certs = tmpfs("1m")
    settings = settings_for(tmp_path, factory, certs)
    app = create_app(settings)
    client = app.test_client()
    old, new = versions(factory, CAROL)
    assert post_batch(client, [relay_event(signed_by(factory, CAROL, old))]).status_code == 200
    before = snapshot(certs)

    remount(certs, "ro")
    batch = [relay_event(signed_by(factory, CAROL, new)), relay_event(factory.signed(DAVE))]
    response = post_batch(client, batch)
    assert response.status_code == 503
    assert response.get_json() == {**RETRY, "count": 2}
    assert client.get("/healthz").status_code == 503
    assert snapshot(certs) == before  # Carol's old certificate, byte for byte, nothing else
    log_text = settings.log_file.read_text("utf-8")
    assert "| store-error: cannot write certificate: [Errno 30] Read-only file system" in log_text
    assert "| 1 more messages not judged: the relay retries the whole batch" in log_text

    remount(certs, "rw")
    assert post_batch(client, batch).status_code == 200
    assert client.get("/healthz").status_code == 200
    assert [v[:2] for v in logged_verdicts(settings.log_file)] == [
        ("stored", "ok"),
        ("tempfail", "store-error"),  # after the first tempfail the rest is not judged
        ("stored", "ok"),
        ("stored", "ok"),
    ]
    assert fingerprint_of(certs / f"{CAROL}.crt") == fingerprint(new)
    assert fingerprint_of(certs / ".history" / f"{CAROL}.{fingerprint(old)}.crt") == fingerprint(
        old
    )
    assert visible_files(certs) == sorted([f"{CAROL}.crt", f"{DAVE}.crt"])
    assert_nothing_torn(certs)


def fill(folder: Path, leave_pages: int) -> Path:
    """Fill the file system of ``folder`` up, then free ``leave_pages`` pages of 4 KiB."""
    filler = folder / ".filler"
    with filler.open("wb", buffering=0) as handle:
        try:
            while True:
                handle.write(b"\0" * 4096)
        except OSError as exc:
            assert exc.errno == errno.ENOSPC
    with filler.open("r+b") as handle:
        handle.truncate(max(filler.stat().st_size - leave_pages * 4096, 0))
    return filler


@pytest.mark.parametrize(
    ("leave_pages", "history_written"),
    [(0, False), (1, True)],
    ids=["full", "room-for-the-history-copy-only"],
)
def test_full_folder_is_503_and_nothing_torn(
    tmp_path, tmpfs, factory, leave_pages, history_written
) -> None:
    """ENOSPC before the history copy, or between it and the new file: either way the old
    certificate stays in place, whole, and the retry after space is freed stores the new one."""
    certs = tmpfs("64k")
    settings = settings_for(tmp_path, factory, certs)
    client = create_app(settings).test_client()
    old, new = versions(factory, CAROL)
    assert post_batch(client, [relay_event(signed_by(factory, CAROL, old))]).status_code == 200
    stored_old = (certs / f"{CAROL}.crt").read_bytes()
    newer = relay_event(signed_by(factory, CAROL, new))

    filler = fill(certs, leave_pages)
    response = post_batch(client, [newer])
    assert response.status_code == 503
    assert (certs / f"{CAROL}.crt").read_bytes() == stored_old
    assert (certs / ".history" / f"{CAROL}.{fingerprint(old)}.crt").exists() is history_written
    assert_nothing_torn(certs)
    log_text = settings.log_file.read_text("utf-8")
    assert "| store-error: cannot write certificate: [Errno 28] No space left on device" in log_text

    filler.unlink()
    assert post_batch(client, [newer]).status_code == 200
    assert [v[:2] for v in logged_verdicts(settings.log_file)] == [
        ("stored", "ok"),
        ("tempfail", "store-error"),
        ("stored", "ok"),
    ]
    assert fingerprint_of(certs / f"{CAROL}.crt") == fingerprint(new)
    assert (certs / ".history" / f"{CAROL}.{fingerprint(old)}.crt").read_bytes() == stored_old
    assert visible_files(certs) == [f"{CAROL}.crt"]
    assert_nothing_torn(certs)
