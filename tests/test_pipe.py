"""The Postfix pipe door, run the way pipe(8) runs it: a fresh process per message, the message
on standard input with LF line ends, a bare environment, ``--sender``/``--recipient`` from the
envelope. It must exit 0 or 75 and nothing else, whatever happens."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import write_ini
from tests.intakes import Case, stored_fingerprint
from tests.paths import REPO, SPARKY

pytestmark = pytest.mark.slow
POSTFIX_ENV = {"LANG": "C", "TZ": "UTC"}  # pipe(8) exports little more than this


def lf(raw: bytes) -> bytes:
    """Postfix stores lines without CR and pipes them so."""
    return raw.replace(b"\r\n", b"\n")


@pytest.fixture
def pipe(tmp_path, dns):
    """``pipe(stdin, *args, case=..., **settings)`` → the finished process."""

    def run(stdin: bytes, *args: str, case: Case | None = None, timeout: float = 60, **values):
        ini = write_ini(
            tmp_path / "webapp.ini",
            {
                "user-certs-dir": str(tmp_path / "certs"),
                "log-file": str(tmp_path / "pipe.log"),
                "dns-nameservers": dns.nameserver,
                "dns-timeout": "2",
                **(case.settings if case else {}),
                **{k.replace("_", "-"): v for k, v in values.items()},
            },
        )
        queue = tmp_path / "queue"
        queue.mkdir(exist_ok=True)
        command = [sys.executable, str(REPO / "readSMIMEsig.py"), "--pipe", "--config", str(ini),
                   "--sender", "bounce@example.org", "--recipient", "collect@inbound.example.net",
                   *args]  # fmt: skip
        return subprocess.run(
            command, input=stdin, capture_output=True, cwd=queue, env=POSTFIX_ENV, timeout=timeout
        )

    return run


@pytest.mark.parametrize("case_name", ["bob", "alice", "8bit"])
def test_each_case_is_stored_and_exits_0(pipe, cases, tmp_path, case_name) -> None:
    case = cases[case_name]
    proc = pipe(lf(case.raw), case=case)
    assert proc.returncode == 0, proc.stderr
    assert stored_fingerprint(tmp_path / "certs", case.email) == case.fingerprint
    log = (tmp_path / "pipe.log").read_text("utf-8")
    assert ",pipe,INFO," in log and "sender=bounce@example.org" in log
    assert "outcome=stored,reason=ok" in log and "intake=pipe" in log


def test_a_rejected_message_exits_0_and_is_logged_not_bounced(pipe, cases, tmp_path) -> None:
    proc = pipe((SPARKY / "signed-from-bob-no-dkim.eml").read_bytes(), case=cases["bob"])
    assert proc.returncode == 0
    assert proc.stdout == b"" and proc.stderr == b""
    assert "outcome=rejected,reason=dkim-missing" in (tmp_path / "pipe.log").read_text()


@pytest.mark.parametrize("stdin", [b"", b"\x00\xff garbage", b"From: a@b\n\nunsigned\n"])
def test_anything_on_stdin_gets_a_final_verdict(pipe, stdin) -> None:
    assert pipe(stdin).returncode == 0


def test_tempfail_exits_75_and_the_retry_stores(pipe, cases, dns, tmp_path) -> None:
    case = cases["bob"]
    dns.mode = "servfail"
    proc = pipe(lf(case.raw), case=case)
    dns.mode = "normal"
    assert proc.returncode == 75
    assert b"temporary failure (dns-error)" in proc.stderr
    assert pipe(lf(case.raw), case=case).returncode == 0
    assert stored_fingerprint(tmp_path / "certs", case.email) == case.fingerprint


def test_a_dns_server_that_never_answers_ends_within_the_deadline_with_75(pipe, cases, dns):
    """Each lookup may wait 30 s, but the judgement's budget is the --deadline's."""
    dns.mode = "drop"
    proc = pipe(lf(cases["bob"].raw), "--deadline", "3", case=cases["bob"], dns_timeout="30",
                timeout=25)  # fmt: skip
    assert proc.returncode == 75
    assert proc.stderr.startswith(b"readSMIMEsig.py --pipe: ")


def test_input_that_never_ends_meets_the_watchdog_with_75(tmp_path) -> None:
    """Whatever blocks (here the read of a message that never ends), --deadline ends it."""
    ini = write_ini(tmp_path / "webapp.ini", {"log-file": str(tmp_path / "pipe.log"),
                                              "user-certs-dir": str(tmp_path / "certs")})  # fmt: skip
    process = subprocess.Popen(
        [sys.executable, str(REPO / "readSMIMEsig.py"), "--pipe", "--config", str(ini),
         "--deadline", "2"],
        stdin=subprocess.PIPE, stderr=subprocess.PIPE, env=POSTFIX_ENV, cwd=tmp_path,
    )  # fmt: skip
    process.stdin.write(b"From: someone@example.org\n")
    process.stdin.flush()
    try:
        assert process.wait(timeout=25) == 75
    finally:
        process.stdin.close()
        if process.poll() is None:
            process.kill()
    assert b"no verdict within --deadline 2 s" in process.stderr.read()


@pytest.mark.parametrize(
    "args", [("--deadline", "soon"), ("--deadline", "0"), ("--deadline", "nan"), ("--surprise",)]
)
def test_bad_arguments_exit_75_not_2(pipe, args) -> None:
    proc = pipe(b"From: a@b\n\nx\n", *args)
    assert proc.returncode == 75
    assert b"readSMIMEsig.py --pipe: error" in proc.stderr


def test_a_configuration_error_exits_75(pipe) -> None:
    proc = pipe(b"From: a@b\n\nx\n", dkim="maybe")
    assert proc.returncode == 75
    assert b"configuration error" in proc.stderr and b"dkim" in proc.stderr


def test_a_missing_configuration_file_exits_75(tmp_path) -> None:
    proc = subprocess.run(
        [sys.executable, str(REPO / "readSMIMEsig.py"), "--pipe", "--config",
         str(tmp_path / "absent.ini")],
        input=b"x", capture_output=True, env=POSTFIX_ENV, cwd=tmp_path, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 75
    assert b"configuration file not found" in proc.stderr


def test_a_crash_exits_75(pipe, tmp_path) -> None:
    """The certificate folder cannot be created (a file is in the way): not a bounce."""
    (tmp_path / "blocker").write_text("a file, not a folder")
    proc = pipe(b"From: a@b\n\nx\n", user_certs_dir=str(tmp_path / "blocker" / "certs"))
    assert proc.returncode == 75
    assert proc.stderr.startswith(b"readSMIMEsig.py --pipe: ")


def test_a_message_over_smtp_max_bytes_is_not_judged_and_exits_0(pipe, cases, tmp_path) -> None:
    proc = pipe(lf(cases["alice"].raw), case=cases["alice"], smtp_max_bytes="1000")
    assert proc.returncode == 0
    assert "larger than smtp-max-bytes (1000)" in (tmp_path / "pipe.log").read_text()
    assert not (tmp_path / "certs" / "alice@example.com.crt").exists()


def test_the_cli_help_names_the_pipe(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, str(REPO / "readSMIMEsig.py"), "--help"],
        capture_output=True, text=True, cwd=tmp_path, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 0 and "--pipe" in proc.stdout
