"""The SMTP and LMTP door: the corpus through smtplib and the real swaks, the reply codes,
LMTP's answer per recipient, the size limit, STARTTLS, and a SIGTERM that lets a judgement
finish. In-process servers record the bytes handed to the pipeline; the command
``python -m smime_collector.smtpd`` runs as a real process, stopped by pid."""

from __future__ import annotations

import asyncio
import shutil
import signal
import smtplib
import socket
import ssl
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from smime_collector.intake.smtpd import Server
from tests import pki
from tests.conftest import write_ini
from tests.intakes import (
    Case,
    crlf,
    recording,
    server_identity,
    stored_fingerprint,
)
from tests.paths import REPO, SPARKY
from tests.servers import free_port

SENDER = "sender@example.org"
RCPT = "secureme@inbound.example.net"


@dataclass
class Running:
    port: int
    collector: object
    certs: Path


@contextmanager
def in_process(settings):
    """The real server on its own event loop in a thread, with a recording pipeline."""
    collector = recording(settings)
    server = Server(collector, settings)
    loop = asyncio.new_event_loop()
    bound = loop.run_until_complete(server.start())
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        yield Running(bound[1], collector, settings.user_certs_dir)
    finally:
        asyncio.run_coroutine_threadsafe(server.stop(), loop).result(timeout=60)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        loop.close()


@pytest.fixture
def smtp(make_settings):
    def build(case: Case | None = None, **extra: str):
        values = {"smtp_listen": "127.0.0.1:0", **(case.settings if case else {}), **extra}
        return in_process(make_settings(**values))

    return build


@pytest.mark.parametrize("case_name", ["bob", "alice", "8bit"])
def test_smtp_stores_each_case_from_the_exact_bytes(smtp, cases, case_name) -> None:
    case = cases[case_name]
    with smtp(case) as running, smtplib.SMTP("127.0.0.1", running.port) as client:
        client.ehlo()
        assert client.has_extn("8bitmime") and client.has_extn("smtputf8")
        refused = client.sendmail(SENDER, [RCPT], crlf(case.raw), mail_options=["BODY=8BITMIME"])
        assert refused == {}
        [delivery] = running.collector.deliveries
        assert (delivery.raw, delivery.intake) == (crlf(case.raw), "smtp")
        assert delivery.envelope.sender == SENDER
        assert stored_fingerprint(running.certs, case.email) == case.fingerprint


def _data_reply(port: int, raw: bytes, lmtp: bool = False) -> tuple[int, bytes]:
    client = smtplib.LMTP("127.0.0.1", port) if lmtp else smtplib.SMTP("127.0.0.1", port)
    with client:
        client.ehlo()
        client.mail(SENDER)
        client.rcpt(RCPT)
        return client.data(raw)


def test_a_rejected_message_is_550_5_7_1_with_reason_and_explanation(smtp, cases) -> None:
    raw = crlf((SPARKY / "signed-from-bob-no-dkim.eml").read_bytes())
    with smtp(cases["bob"]) as running:
        code, text = _data_reply(running.port, raw)
    assert code == 550
    assert text.decode() == (
        "5.7.1 dkim-missing The message has no DKIM signature, so its From: address cannot "
        "be trusted."
    )


def test_unchanged_is_250_too(smtp, cases) -> None:
    with smtp(cases["alice"]) as running:
        first = _data_reply(running.port, crlf(cases["alice"].raw))
        again = _data_reply(running.port, crlf(cases["alice"].raw))
    assert first == (250, b"2.0.0 OK: certificate stored")
    assert again == (250, b"2.0.0 OK: certificate already stored")


def test_tempfail_is_451_4_3_0_and_the_retry_stores(smtp, cases, dns) -> None:
    case = cases["bob"]
    with smtp(case) as running:
        dns.mode = "servfail"
        code, text = _data_reply(running.port, crlf(case.raw))
        dns.mode = "normal"
        assert code == 451 and text.startswith(b"4.3.0 dns-error")
        assert stored_fingerprint(running.certs, case.email) is None
        assert _data_reply(running.port, crlf(case.raw))[0] == 250
        assert stored_fingerprint(running.certs, case.email) == case.fingerprint


def test_over_the_size_limit_is_552_and_advertised_as_size(smtp, cases) -> None:
    case = cases["alice"]
    with smtp(case, smtp_max_bytes="2000") as running:
        with smtplib.SMTP("127.0.0.1", running.port) as client:
            client.ehlo()
            assert client.esmtp_features["size"] == "2000"
            code, _ = client.mail(SENDER, options=[f"SIZE={len(case.raw)}"])
            assert code == 552
        assert _data_reply(running.port, crlf(case.raw))[0] == 552
        assert running.collector.deliveries == []


def test_smtputf8_addresses_are_accepted(smtp, cases) -> None:
    with smtp(cases["alice"]) as running, smtplib.SMTP("127.0.0.1", running.port) as client:
        refused = client.sendmail(
            "jörg@bücher.example", ["empfänger@inbound.example.net"], crlf(cases["alice"].raw),
            mail_options=["SMTPUTF8", "BODY=8BITMIME"],
        )  # fmt: skip
        assert refused == {}
        [delivery] = running.collector.deliveries
        assert delivery.envelope.sender == "jörg@bücher.example"


def test_recipients_outside_smtp_recipients_are_refused(smtp, cases) -> None:
    with (
        smtp(cases["alice"], smtp_recipients="inbound.example.net, keys@other.example") as running,
        smtplib.SMTP("127.0.0.1", running.port) as client,
    ):
        client.ehlo()
        client.mail(SENDER)
        assert client.rcpt("anyone@INBOUND.example.net")[0] == 250
        assert client.rcpt("keys@other.example")[0] == 250
        code, text = client.rcpt("someone@other.example")
        assert (code, text[:5]) == (550, b"5.1.1")
        assert client.data(crlf(cases["alice"].raw))[0] == 250
        assert running.collector.deliveries[0].envelope.recipients == (
            "anyone@INBOUND.example.net",
            "keys@other.example",
        )


def test_lmtp_answers_once_per_accepted_recipient(smtp, cases) -> None:
    raw = crlf((SPARKY / "signed-from-bob-no-dkim.eml").read_bytes())
    with (
        smtp(cases["bob"], smtp_protocol="lmtp", smtp_recipients="inbound.example.net") as running,
        smtplib.LMTP("127.0.0.1", running.port) as client,
    ):
        client.ehlo()  # smtplib.LMTP sends LHLO
        client.mail(SENDER)
        for rcpt in ("a@inbound.example.net", "nobody@elsewhere.example", "b@inbound.example.net"):
            client.rcpt(rcpt)
        first = client.data(raw)
        second = client.getreply()
        assert first[0] == second[0] == 550
        assert first[1].startswith(b"5.7.1 dkim-missing")
        client.rset()
        client.mail(SENDER)
        client.rcpt("a@inbound.example.net")
        client.rcpt("b@inbound.example.net")
        assert client.data(crlf(cases["bob"].raw))[0] == 250
        assert client.getreply()[0] == 250
        assert [d.intake for d in running.collector.deliveries] == ["lmtp", "lmtp"]


def test_lmtp_refuses_ehlo(smtp) -> None:
    with smtp(smtp_protocol="lmtp") as running, smtplib.SMTP("127.0.0.1", running.port) as client:
        assert client.ehlo()[0] == 500


# -- the command, as a real process ------------------------------------------------------------


@dataclass
class Process:
    process: subprocess.Popen
    port: int
    folder: Path

    def log(self) -> str:
        path = self.folder / "smtpd.log"
        return path.read_text("utf-8") if path.exists() else ""

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=60)


@pytest.fixture
def smtpd(tmp_path, dns):
    started: list[Process] = []

    def start(case: Case | None = None, **values: str) -> Process:
        port = free_port()
        ini = write_ini(
            tmp_path / "webapp.ini",
            {
                "user-certs-dir": "certs",
                "log-file": "smtpd.log",
                "dns-nameservers": dns.nameserver,
                "smtp-listen": f"127.0.0.1:{port}",
                **(case.settings if case else {}),
                **values,
            },
        )
        process = subprocess.Popen(
            [sys.executable, "-m", "smime_collector.smtpd", "--config", str(ini)],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        running = Process(process, port, tmp_path)
        started.append(running)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(process.stdout.read().decode(errors="replace"))
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                return running
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("smtpd did not listen within 30 s")

    yield start
    for running in started:
        running.stop()


def swaks(port: int, data: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    if shutil.which("swaks") is None:
        pytest.fail("swaks is not installed: make test installs it (Debian package swaks)")
    return subprocess.run(
        ["swaks", "--server", "127.0.0.1", "--port", str(port), "--from", SENDER,
         "--to", RCPT, "--data", f"@{data}", "--hide-informational", *extra],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip


@pytest.mark.slow
@pytest.mark.parametrize("protocol", ["smtp", "lmtp"])
def test_swaks_delivers_bob_and_alice(smtpd, cases, tmp_path, protocol) -> None:
    running = smtpd(cases["bob"], **{"smtp-protocol": protocol})
    message = tmp_path / "bob.eml"
    message.write_bytes(cases["bob"].raw)
    proc = swaks(running.port, message, "--protocol", protocol.upper())
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "250 2.0.0 OK: certificate stored" in proc.stdout
    certs = running.folder / "certs"
    assert stored_fingerprint(certs, cases["bob"].email) == cases["bob"].fingerprint
    no_dkim = SPARKY / "signed-from-bob-no-dkim.eml"
    rejected = swaks(running.port, no_dkim, "--protocol", protocol.upper())
    assert rejected.returncode != 0
    assert "550 5.7.1 dkim-missing" in rejected.stdout


@pytest.mark.slow
def test_swaks_over_starttls(smtpd, cases, tmp_path) -> None:
    root = pki.make_root("SMTP Test CA")
    cert, key = server_identity(root).write(tmp_path, "smtp")
    running = smtpd(cases["alice"], **{"smtp-tls-cert": str(cert), "smtp-tls-key": str(key)})
    message = tmp_path / "alice.eml"
    message.write_bytes(cases["alice"].raw)
    proc = swaks(running.port, message, "--tls")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "STARTTLS" in proc.stdout and "250 2.0.0 OK: certificate stored" in proc.stdout
    context = ssl.create_default_context(cafile=None)
    context.load_verify_locations(cadata=root.cert_pem().decode())
    with smtplib.SMTP("127.0.0.1", running.port) as client:
        client.starttls(context=context)
        assert client.sock.version() is not None


@pytest.mark.slow
def test_sigterm_lets_the_judgement_under_way_finish_and_reply(smtpd, cases, dns) -> None:
    """A DNS server that never answers keeps the judgement busy for dns-timeout; SIGTERM
    arrives meanwhile. The server stops listening at once, but the message still gets its
    verdict's reply (451: the lookup timed out), and then the process exits 0."""
    running = smtpd(cases["bob"], **{"dns-timeout": "3"})
    replies: list[tuple[int, bytes]] = []
    dns.mode = "drop"
    sender = threading.Thread(
        target=lambda: replies.append(_data_reply(running.port, crlf(cases["bob"].raw)))
    )
    sender.start()
    _wait_for(running, "Message from 127.0.0.1")
    running.process.send_signal(signal.SIGTERM)
    _wait_for(running, "no longer listening; waiting for 1 judgement")
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", running.port), timeout=2)
    sender.join(timeout=60)
    assert running.process.wait(timeout=60) == 0
    assert replies and replies[0][0] == 451, replies
    assert "outcome=tempfail,reason=dns-error" in running.log()


def _wait_for(running: Process, text: str, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while text not in running.log():
        assert running.process.poll() is None or text in running.log(), running.log()
        assert time.monotonic() < deadline, f"{text!r} not logged: {running.log()}"
        time.sleep(0.05)


@pytest.mark.slow
def test_a_bad_configuration_stops_with_one_line(tmp_path) -> None:
    ini = write_ini(tmp_path / "webapp.ini", {"smtp-tls-cert": str(tmp_path / "absent.pem")})
    proc = subprocess.run(
        [sys.executable, "-m", "smime_collector.smtpd", "--config", str(ini)],
        cwd=REPO, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "smtp-tls-cert" in proc.stderr


@pytest.mark.slow
def test_a_port_in_use_stops_with_one_line(tmp_path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        ini = write_ini(
            tmp_path / "webapp.ini",
            {"smtp-listen": f"127.0.0.1:{port}", "log-file": str(tmp_path / "log")},
        )
        proc = subprocess.run(
            [sys.executable, "-m", "smime_collector.smtpd", "--config", str(ini)],
            cwd=REPO, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
    assert proc.returncode == 2
    assert "smtp-listen: cannot listen" in proc.stderr and "Traceback" not in proc.stderr
