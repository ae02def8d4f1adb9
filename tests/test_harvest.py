"""CLI harvesting: Maildir folders, mbox files and folders of mail, with the summary table and
the progress bar (on a terminal only).

Mailboxes are built with the stdlib ``mailbox`` module from the sparkySecure corpus (judged at
Bob's verify time, DKIM through the loopback DNS server) and from generated PKI (dkim = off).
"""

from __future__ import annotations

import json
import mailbox
import os
import pty
import re
import resource
import select
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from tests import pki
from tests.conftest import write_ini
from tests.corpus import sparky_rows
from tests.helpers import run_cli, sha256_of_pem, visible_files
from tests.paths import REPO

ROWS = {row.name: row for row in sparky_rows()}
BOB = ROWS["signed-from-bob.eml"]
BOB_TIME = "2018-11-22T15:09:16Z"
JUNK = b"this is not an email at all\n"

# label -> (raw message, outcome, reason, email); "bob" is stored the first time only.
MESSAGES = {
    "bob": (BOB.raw, "stored", "ok", BOB.email),
    "no-dkim": (ROWS["signed-from-bob-no-dkim.eml"].raw, "rejected", "dkim-missing", BOB.email),
    "bad-dkim": (ROWS["signed-from-bob-bad-dkim.eml"].raw, "rejected", "dkim-invalid", BOB.email),
    "corrupt": (
        ROWS["from-bob-corrupt-signature.eml"].raw,
        "rejected",
        "bad-signature",
        BOB.email,
    ),
    "fake-p7s": (
        ROWS["from-bob-attachment-not-sig.eml"].raw,
        "rejected",
        "not-signed",
        BOB.email,
    ),
    "declaration": (ROWS["declaration.eml"].raw, "rejected", "not-signed", "steve@thetucks.com"),
    "no-final-newline": (
        ROWS["example_email1.eml"].raw,
        "rejected",
        "not-signed",
        "alice@example.com",
    ),
    "junk": (JUNK, "rejected", "malformed", None),
}
MIX = ["bob", "no-dkim", "bad-dkim", "corrupt", "bob", "fake-p7s", "declaration", "junk"]
SUMMARY_HEAD = "  outcome    reason              count"
SUMMARY_ROW = re.compile(r"^  (\w+) +([\w-]+) +(\d+)$")
BAR = re.compile(r"\r\[[#-]{30}\] \d+/\d+ ")


@pytest.fixture
def values(dns) -> dict[str, str]:
    return {
        "user-certs-dir": "certs",
        "log-file": "cli.log",
        "dns-nameservers": dns.nameserver,
        "dns-timeout": "2",
        "verify-time": BOB_TIME,
    }


@pytest.fixture
def ini(tmp_path, values) -> Path:
    return write_ini(tmp_path / "webapp.ini", values)


def make_maildir(path: Path, labels: list[str]) -> dict[str, str]:
    """A Maildir holding the labelled messages byte for byte; returns key -> label.

    The second message is moved to ``cur/`` with flags, as a mail client does once it is read;
    a half-delivered file sits in ``tmp/``, which readers must ignore.
    """
    box = mailbox.Maildir(path, create=True)
    keys = {box.add(MESSAGES[label][0]): label for label in labels}
    box.close()
    if len(keys) > 1:
        second = list(keys)[1]
        os.rename(path / "new" / second, path / "cur" / f"{second}:2,S")
    (path / "tmp" / "1700000000.M1P1.half-delivered").write_bytes(BOB.raw[:500])
    return keys


def make_mbox(path: Path, labels: list[str]) -> None:
    box = mailbox.mbox(path, create=True)
    box.lock()
    for label in labels:
        box.add(MESSAGES[label][0])
    box.flush()
    box.unlock()
    box.close()


def json_lines(stdout: str) -> list[dict]:
    return [json.loads(line) for line in stdout.splitlines()]


def summary_counts(text: str) -> list[tuple[str, str, int]]:
    """The closing table's rows, in printed order; asserts its heading."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("Summary: "))
    assert lines[start - 1] == "", "the table is set off by a blank line"
    total = int(lines[start].split()[1])
    assert lines[start] == f"Summary: {total} messages"
    assert lines[start + 1] == SUMMARY_HEAD
    rows = []
    for line in lines[start + 2 :]:
        match = SUMMARY_ROW.match(line)
        assert match, f"not a summary row: {line!r}"
        rows.append((match[1], match[2], int(match[3])))
    assert sum(count for *_, count in rows) == total
    counts = [count for *_, count in rows]
    assert counts == sorted(counts, reverse=True), "most frequent first"
    return rows


def expected_verdicts(labels: list[str]) -> list[tuple[str, str, str | None]]:
    """(outcome, reason, email) per message in order: Bob is stored once, then unchanged."""
    result, seen_bob = [], False
    for label in labels:
        _raw, outcome, reason, email = MESSAGES[label]
        if label == "bob":
            outcome, seen_bob = ("unchanged" if seen_bob else "stored"), True
        result.append((outcome, reason, email))
    return result


def as_table(verdicts) -> Counter:
    return Counter((outcome, reason) for outcome, reason, _email in verdicts)


# -- Maildir ---------------------------------------------------------------------------------


def test_maildir_json_lines_exit_code_and_summary(tmp_path, ini) -> None:
    keys = make_maildir(tmp_path / "Maildir", MIX)
    proc = run_cli("--config", ini, "--json", "Maildir", cwd=tmp_path)
    assert proc.returncode == 1, proc.stderr  # some rejected, none tempfail
    results = json_lines(proc.stdout)  # stdout holds nothing but the JSON lines
    assert len(results) == len(MIX)  # the file in tmp/ was not judged
    names = [r["file"] for r in results]
    assert sorted(names) == sorted(f"Maildir:{key}" for key in keys)
    labels = [keys[name.partition(":")[2]] for name in names]
    expected = expected_verdicts(labels)
    assert [(r["outcome"], r["reason"], r["email"]) for r in results] == expected
    for result in results:
        if result["outcome"] in ("stored", "unchanged"):
            assert result["path"] == str(tmp_path / "certs" / f"{BOB.email}.crt")
        else:
            assert result["path"] is None
    assert sha256_of_pem(tmp_path / "certs" / f"{BOB.email}.crt") == BOB.fingerprint
    assert visible_files(tmp_path / "certs") == [f"{BOB.email}.crt"]
    # With --json the table goes to stderr, so stdout stays machine-readable.
    rows = summary_counts(proc.stderr)
    assert Counter({(o, r): n for o, r, n in rows}) == as_table(expected)
    assert rows[0] == ("rejected", "not-signed", 2)
    assert "\r" not in proc.stderr  # no progress bar when piped


def test_maildir_verdicts_match_the_same_messages_as_files(tmp_path, ini, values) -> None:
    """Same verdicts and exit code as the messages saved as .eml files and named one by one."""
    keys = make_maildir(tmp_path / "Maildir", MIX)
    from_box = run_cli("--config", ini, "--json", "Maildir", cwd=tmp_path)
    order = [r["file"].partition(":")[2] for r in json_lines(from_box.stdout)]

    singles = tmp_path / "singles"
    singles.mkdir()
    files = []
    for number, key in enumerate(order):
        path = singles / f"{number:02d}-{keys[key]}.eml"
        path.write_bytes(MESSAGES[keys[key]][0])
        files.append(path.relative_to(tmp_path))
    other_ini = write_ini(tmp_path / "singles.ini", {**values, "user-certs-dir": "certs-singles"})
    from_files = run_cli("--config", other_ini, "--json", *files, cwd=tmp_path)
    assert from_files.returncode == from_box.returncode == 1

    def verdicts(proc):
        return [(r["outcome"], r["reason"], r["email"]) for r in json_lines(proc.stdout)]

    assert verdicts(from_files) == verdicts(from_box)
    # and each file alone gives its own exit code: 0 when stored/unchanged, 1 when rejected
    for path, (outcome, *_rest) in zip(files[:3], verdicts(from_files), strict=False):
        alone = run_cli("--config", other_ini, "--json", path, cwd=tmp_path)
        assert alone.returncode == (0 if outcome in ("stored", "unchanged") else 1)
        assert "Summary" not in alone.stdout + alone.stderr  # one message: no table


def test_harvesting_again_is_harmless(tmp_path, ini) -> None:
    make_maildir(tmp_path / "Maildir", ["bob", "bob"])
    first = run_cli("--config", ini, "Maildir", cwd=tmp_path)
    assert first.returncode == 0, first.stdout + first.stderr
    assert summary_counts(first.stdout) == [("stored", "ok", 1), ("unchanged", "ok", 1)]
    stored = (tmp_path / "certs" / f"{BOB.email}.crt").read_bytes()
    second = run_cli("--config", ini, "Maildir", cwd=tmp_path)
    assert second.returncode == 0
    assert summary_counts(second.stdout) == [("unchanged", "ok", 2)]
    assert (tmp_path / "certs" / f"{BOB.email}.crt").read_bytes() == stored


def test_tempfail_in_a_maildir_exits_75(tmp_path, ini, dns) -> None:
    dns.mode = "servfail"
    make_maildir(tmp_path / "Maildir", ["bob", "no-dkim", "junk"])
    proc = run_cli("--config", ini, "--json", "Maildir", cwd=tmp_path)
    assert proc.returncode == 75  # tempfail beats rejected
    got = Counter((r["outcome"], r["reason"]) for r in json_lines(proc.stdout))
    assert got == Counter(
        {
            ("tempfail", "dns-error"): 1,
            ("rejected", "dkim-missing"): 1,
            ("rejected", "malformed"): 1,
        }
    )
    assert Counter({(o, r): n for o, r, n in summary_counts(proc.stderr)}) == got
    assert not (tmp_path / "certs").exists() or visible_files(tmp_path / "certs") == []


# -- mbox ------------------------------------------------------------------------------------


def test_mbox_text_lines_exit_code_and_summary(tmp_path, ini) -> None:
    labels = [*MIX, "no-final-newline"]
    make_mbox(tmp_path / "archive.mbox", labels)
    proc = run_cli("--config", ini, "archive.mbox", cwd=tmp_path)
    assert proc.returncode == 1
    assert proc.stderr == ""  # piped: no progress bar, nothing else either
    out = proc.stdout.splitlines()
    expected = expected_verdicts(labels)
    # a line per message, then a blank line, the heading, the column names and a row per kind
    assert len(out) == len(labels) + 3 + len(as_table(expected))
    cert = tmp_path / "certs" / f"{BOB.email}.crt"
    for number, (line, (outcome, reason, email)) in enumerate(
        zip(out[: len(labels)], expected, strict=True), 1
    ):
        prefix = f"archive.mbox#{number}: {outcome} ({reason})"
        assert line.startswith(prefix), (line, prefix)
        if outcome in ("stored", "unchanged"):
            assert line == f"{prefix} {email} -> {cert}"
        elif email:
            assert line.startswith(f"{prefix} {email}: ")  # then the reason in words
        else:
            assert line.startswith(f"{prefix}: ")  # no address: the reason in words
    assert Counter({(o, r): n for o, r, n in summary_counts(proc.stdout)}) == as_table(expected)
    assert sha256_of_pem(cert) == BOB.fingerprint  # mbox kept the signed bytes intact


def test_many_mbox_files_do_not_run_out_of_file_descriptors(tmp_path, ini) -> None:
    """More mbox files than the process may open at once: every message is still judged."""
    folder = tmp_path / "archive"
    folder.mkdir()
    for month in range(60):
        make_mbox(folder / f"{month:03d}.mbox", ["declaration", "junk"])
    proc = subprocess.run(
        [sys.executable, str(REPO / "readSMIMEsig.py"), "--config", ini, "--json", "archive"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (40, 40)),
    )
    assert proc.returncode == 1, proc.stderr
    got = [(r["file"], r["outcome"], r["reason"]) for r in json_lines(proc.stdout)]
    assert got == [
        (f"archive/{month:03d}.mbox#{number}", "rejected", reason)
        for month in range(60)
        for number, reason in ((1, "not-signed"), (2, "malformed"))
    ]


def test_mbox_and_single_file_give_the_same_verdict(tmp_path, ini) -> None:
    make_mbox(tmp_path / "one.mbox", ["bob"])
    (tmp_path / "bob.eml").write_bytes(BOB.raw)
    proc = run_cli("--config", ini, "--json", "one.mbox", "bob.eml", cwd=tmp_path)
    assert proc.returncode == 0
    results = json_lines(proc.stdout)
    assert [(r["file"], r["outcome"], r["reason"]) for r in results] == [
        ("one.mbox#1", "stored", "ok"),
        ("bob.eml", "unchanged", "ok"),
    ]


# -- folders ---------------------------------------------------------------------------------


def test_folder_with_files_a_nested_maildir_and_an_mbox(tmp_path, ini) -> None:
    inbox = tmp_path / "inbox"
    (inbox / "sub").mkdir(parents=True)
    (inbox / "a-bob.eml").write_bytes(BOB.raw)
    (inbox / ".hidden.eml").write_bytes(JUNK)  # dot files are skipped
    (inbox / ".git").mkdir()
    (inbox / ".git" / "x.eml").write_bytes(JUNK)  # and dot folders
    (inbox / "sub" / "b-no-dkim.eml").write_bytes(MESSAGES["no-dkim"][0])
    keys = make_maildir(inbox / "sub" / "Maildir", ["corrupt"])
    make_mbox(inbox / "archive.mbox", ["bad-dkim", "declaration"])
    proc = run_cli("--config", ini, "--json", "inbox", cwd=tmp_path)
    assert proc.returncode == 1
    got = {r["file"]: (r["outcome"], r["reason"]) for r in json_lines(proc.stdout)}
    assert got == {
        "inbox/a-bob.eml": ("stored", "ok"),
        "inbox/archive.mbox#1": ("rejected", "dkim-invalid"),
        "inbox/archive.mbox#2": ("rejected", "not-signed"),
        f"inbox/sub/Maildir:{next(iter(keys))}": ("rejected", "bad-signature"),
        "inbox/sub/b-no-dkim.eml": ("rejected", "dkim-missing"),
    }
    assert len(json_lines(proc.stdout)) == 5  # the Maildir's tmp/ file was not read either
    assert sum(n for *_, n in summary_counts(proc.stderr)) == 5


def test_unreadable_and_missing_paths_are_rejected_not_fatal(tmp_path, ini) -> None:
    (tmp_path / "bob.eml").write_bytes(BOB.raw)
    proc = run_cli("--config", ini, "--json", "missing.eml", "bob.eml", cwd=tmp_path)
    assert proc.returncode == 1
    assert [(r["file"], r["outcome"], r["reason"]) for r in json_lines(proc.stdout)] == [
        ("missing.eml", "rejected", "malformed"),
        ("bob.eml", "stored", "ok"),
    ]


def test_generated_mail_with_dkim_off(tmp_path) -> None:
    """Harvest without DNS: generated root and senders, dkim = off, judged now."""
    root = pki.make_root("Harvest Test Root")
    (tmp_path / "root.pem").write_bytes(root.cert_pem())
    alice = pki.make_leaf(root, "alice@example.org")
    signing_only = pki.make_leaf(root, "carol@example.org", key_usage={"digital_signature": True})
    text = pki.mime_body("Please use this certificate.\n")
    mails = {
        "alice": pki.message(pki.sign_detached(text, alice), from_addr="alice@example.org"),
        "mismatch": pki.message(pki.sign_detached(text, alice), from_addr="dave@example.org"),
        "carol": pki.message(pki.sign_detached(text, signing_only), from_addr="carol@example.org"),
    }
    box = mailbox.Maildir(tmp_path / "Maildir", create=True)
    keys = {box.add(raw): label for label, raw in mails.items()}
    ini = write_ini(
        tmp_path / "webapp.ini",
        {"dkim": "off", "trusted-certs": "root.pem", "user-certs-dir": "certs", "log-file": "l"},
    )
    proc = run_cli("--config", ini, "--json", "Maildir", cwd=tmp_path)
    assert proc.returncode == 1
    got = {keys[r["file"].partition(":")[2]]: (r["outcome"], r["reason"]) for r in
           json_lines(proc.stdout)}  # fmt: skip
    assert got == {
        "alice": ("stored", "ok"),
        "mismatch": ("rejected", "email-mismatch"),
        "carol": ("rejected", "wrong-key-usage"),
    }
    assert visible_files(tmp_path / "certs") == ["alice@example.org.crt"]


# -- progress bar ----------------------------------------------------------------------------


def run_in_terminal(args: list[str], cwd: Path, stdout_piped: bool = False) -> tuple[int, str, str]:
    """Run the CLI with a pseudo-terminal as stderr (and stdout unless ``stdout_piped``).

    Returns the exit code, what the terminal showed, and the piped stdout.
    """
    master, slave = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, str(REPO / "readSMIMEsig.py"), *args],
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE if stdout_piped else slave,
        stderr=slave,
    )
    os.close(slave)
    shown, deadline = bytearray(), time.monotonic() + 60
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.5)
            if ready:
                try:
                    data = os.read(master, 65536)
                except OSError:  # EIO: the child closed the terminal
                    break
                if not data:
                    break
                shown += data
            elif proc.poll() is not None:
                break
        piped = proc.stdout.read().decode() if stdout_piped else ""
        code = proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)
    return code, shown.decode(errors="replace"), piped


def test_progress_bar_on_a_terminal(tmp_path, ini) -> None:
    make_maildir(tmp_path / "Maildir", ["bob", "no-dkim", "junk"])
    code, shown, _ = run_in_terminal(["--config", str(ini), "Maildir"], tmp_path)
    assert code == 1
    bars = BAR.findall(shown)
    assert [bar.split()[-1] for bar in bars] == ["0/3", "1/3", "2/3"]
    assert "Summary: 3 messages" in shown
    assert shown.count("Maildir:") >= 3  # the result lines are there too


def test_no_progress_bar_when_stdout_is_piped(tmp_path, ini) -> None:
    make_maildir(tmp_path / "Maildir", ["bob", "no-dkim"])
    code, shown, piped = run_in_terminal(
        ["--config", str(ini), "Maildir"], tmp_path, stdout_piped=True
    )
    assert code == 1
    assert not BAR.search(shown)  # piped output means a script is reading: no bar at all
    assert "\r" not in piped and "[" not in piped  # the pipe gets clean lines
    assert summary_counts(piped)[0][2] == 1


def test_no_progress_bar_with_json_even_on_a_terminal(tmp_path, ini) -> None:
    make_maildir(tmp_path / "Maildir", ["bob", "no-dkim"])
    code, shown, _ = run_in_terminal(["--config", str(ini), "--json", "Maildir"], tmp_path)
    assert code == 1
    assert not BAR.search(shown) and "###" not in shown and "---" not in shown
    assert shown.count('"outcome"') == 2


def test_no_progress_bar_when_piped(tmp_path, ini) -> None:
    make_maildir(tmp_path / "Maildir", ["bob", "no-dkim"])
    proc = run_cli("--config", ini, "Maildir", cwd=tmp_path)
    assert proc.returncode == 1
    assert proc.stderr == ""
    assert not BAR.search(proc.stdout) and "\r" not in proc.stdout
