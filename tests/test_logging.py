"""Logs that lose nothing: safe rotation with several processes, request ids, levels, formats."""

from __future__ import annotations

import json
import logging
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from smime_collector import logsetup
from smime_collector.verdict import Outcome
from tests.conftest import write_ini
from tests.helpers import OUTCOME_LINE, post_batch, relay_event
from tests.paths import REPO
from webapp import create_app

LINE = r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3},(\w+),(\w+),([\w.:-]+),(.*)$"


def fields(log_file: Path) -> list[tuple[str, str, str, str]]:
    """(entry, level, request id, message) of every line; each must be a well-formed line."""
    pattern = re.compile(LINE)
    rows = []
    for line in log_file.read_text("utf-8").splitlines():
        match = pattern.match(line)
        assert match, f"not a log line: {line!r}"
        rows.append(match.groups())
    return rows


@pytest.mark.slow
def test_two_processes_and_a_forced_logrotate_keep_every_line(tmp_path) -> None:
    logrotate = shutil.which("logrotate") or "/usr/sbin/logrotate"
    if not Path(logrotate).exists():
        pytest.fail("logrotate is not installed: make test installs it (Debian package logrotate)")
    log_file = tmp_path / "webapp.log"
    config = (REPO / "contrib" / "logrotate.conf").read_text()
    config = config.replace("/srv/smime-collector/webapp.log", str(log_file))
    conf = tmp_path / "logrotate.conf"
    conf.write_text(config)
    count = 4000
    writers = [
        subprocess.Popen(
            [sys.executable, "-m", "tests.logwriter", str(log_file), name, str(count)], cwd=REPO
        )
        for name in ("one", "two")
    ]
    try:
        deadline = time.monotonic() + 60
        while not all(Path(f"{log_file}.{n}.ready").exists() for n in ("one", "two")):
            assert time.monotonic() < deadline, "the writers did not start"
            assert all(w.poll() is None for w in writers), "a writer died"
            time.sleep(0.01)
        rotated = subprocess.run(
            [logrotate, "-f", "-s", str(tmp_path / "state"), str(conf)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert rotated.returncode == 0, rotated.stderr
        for writer in writers:
            assert writer.wait(timeout=120) == 0
    finally:
        for writer in writers:
            if writer.poll() is None:
                writer.kill()
    backup = Path(f"{log_file}.1")
    assert backup.exists(), "logrotate did not rotate"
    assert log_file.exists() and log_file.stat().st_size > 0, "nobody reopened the new file"
    lines = backup.read_text("utf-8").splitlines() + log_file.read_text("utf-8").splitlines()
    for name in ("one", "two"):
        numbers = sorted(int(line.rsplit("-", 1)[1]) for line in lines if f"line {name}-" in line)
        assert numbers == list(range(count)), f"{name}: {count - len(numbers)} lines lost"


def test_two_apps_in_one_process_keep_to_their_own_files(make_settings, tmp_path) -> None:
    first = make_settings(log_file=str(tmp_path / "first.log"))
    second = make_settings(log_file=str(tmp_path / "second.log"))
    one, two = create_app(first).test_client(), create_app(second).test_client()
    assert post_batch(one, [relay_event(b"From: a@one.example\r\n\r\nx")]).status_code == 200
    assert post_batch(two, [relay_event(b"From: b@two.example\r\n\r\nx")]).status_code == 200
    text_one = (tmp_path / "first.log").read_text()
    text_two = (tmp_path / "second.log").read_text()
    assert "a@one.example" in text_one and "b@two.example" not in text_one
    assert "b@two.example" in text_two and "a@one.example" not in text_two


def test_every_line_of_a_request_carries_its_request_id(make_settings) -> None:
    settings = make_settings()
    client = create_app(settings).test_client()
    answer = client.post(
        "/",
        data=json.dumps([relay_event(b"From: a@one.example\r\nMessage-ID: <m1@one>\r\n\r\nx")]),
        headers={
            "Content-Type": "application/json",
            "X-MessageSystems-Webhook-Token": "test-token",
            "X-Request-Id": "relay-42",
        },
    )
    assert answer.headers["X-Request-Id"] == "relay-42"
    rows = [row for row in fields(settings.log_file) if row[2] != "start-up"]
    assert rows and {row[2] for row in rows} == {"relay-42"}
    verdict = [row[3] for row in rows if row[3].startswith("| outcome=")]
    assert verdict == [
        "| outcome=rejected,reason=not-signed,email=a@one.example,message_id=<m1@one>,"
        "intake=sparkpost"
    ]
    unsafe = client.post("/", data="[]", headers={"X-Request-Id": "a b;forged"})
    assert unsafe.headers["X-Request-Id"] != "a b;forged"  # replaced, never logged as sent


def test_levels_say_what_needs_a_look(make_settings, dns) -> None:
    settings = make_settings()
    client = create_app(settings).test_client()
    assert post_batch(client, [], token="wrong").status_code == 401
    dns.mode = "servfail"
    signed = (REPO.parent / "shared/corpus/sparkysecure/signed-from-bob.eml").read_bytes()
    assert post_batch(client, [relay_event(signed)]).status_code == 503
    rows = fields(settings.log_file)
    levels = {row[3].split(",")[0]: row[1] for row in rows}
    assert levels["| invalid X-MessageSystems-Webhook-Token"] == "WARNING"
    assert levels["| outcome=tempfail"] == "WARNING"
    assert next(row[1] for row in rows if row[3].startswith("| content-type=")) == "INFO"


def test_json_format_is_one_object_per_line(make_settings) -> None:
    settings = make_settings(log_format="json")
    client = create_app(settings).test_client()
    raw = b"From: a@one.example\r\nMessage-ID: <j1@one>\r\n\r\nx"
    assert post_batch(client, [relay_event(raw)]).status_code == 200
    records = [json.loads(line) for line in settings.log_file.read_text().splitlines()]
    verdict = [r for r in records if "outcome" in r]
    assert len(verdict) == 1
    assert {k: verdict[0][k] for k in ("outcome", "reason", "email", "message_id", "intake")} == {
        "outcome": Outcome.REJECTED.value,
        "reason": "not-signed",
        "email": "a@one.example",
        "message_id": "<j1@one>",
        "intake": "sparkpost",
    }
    assert {r["entry"] for r in records} == {"webapp"}
    request_ids = {r["request_id"] for r in records if r["level"] == "INFO"}
    assert len(request_ids) == 1


def test_log_file_dash_logs_to_standard_error(tmp_path) -> None:
    eml = tmp_path / "plain.eml"
    eml.write_bytes(b"From: a@one.example\r\n\r\nhello\r\n")
    proc = subprocess.run(
        [sys.executable, str(REPO / "readSMIMEsig.py"), str(eml)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={"PATH": "/usr/bin:/bin", "SMIME_COLLECTOR_LOG_FILE": "-"},
        timeout=60,
    )
    assert proc.returncode == 1
    assert OUTCOME_LINE.search(proc.stderr), proc.stderr
    assert ",readSMIMEsig,INFO," in proc.stderr
    assert not list(tmp_path.glob("*.log"))


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["text", "json"])
def test_the_database_drivers_warnings_go_to_the_log(tmp_path, database, fmt) -> None:
    """psycopg's pool logs why it cannot connect (here: a wrong password) from its own threads.
    Those lines belong in the configured log, as WARNING, and not on standard error through
    Python's last-resort handler. (Identical lines may appear: the pool tries a first
    connection and a second for a waiting request in the same millisecond.)"""
    wrong = tmp_path / "wrong-password"
    wrong.write_text("not the password\n")
    ini = write_ini(
        tmp_path / "webapp.ini",
        {**database, "database-password-file": str(wrong), "log-file": "webapp.log",
         "log-format": fmt},
    )  # fmt: skip
    message = tmp_path / "message.eml"
    message.write_bytes(b"From: a@example.org\r\n\r\nnot signed\r\n")
    proc = subprocess.run(
        [sys.executable, str(REPO / "readSMIMEsig.py"), "--config", str(ini), str(message)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 1, proc.stdout + proc.stderr  # rejected: not-signed
    assert "error connecting" not in proc.stderr, proc.stderr
    text = (tmp_path / "webapp.log").read_text("utf-8")
    if fmt == "json":
        records = [json.loads(line) for line in text.splitlines()]
        found = [(r["level"], r["logger"], r["message"]) for r in records]
    else:
        found = [(level, "", msg) for _, level, _, msg in fields(tmp_path / "webapp.log")]
    pool = [row for row in found if "error connecting in 'smime-collector'" in row[2]]
    assert pool, text
    assert all(row[0] == "WARNING" and "password authentication failed" in row[2] for row in pool)
    assert all(row[1] == "psycopg.pool" for row in pool) or fmt == "text"
    assert not any("connection requested" in row[2] for row in found), "the pool's INFO chatter"


def test_a_driver_record_is_written_once_and_never_to_standard_error(tmp_path, capfd) -> None:
    """One record on psycopg's pool logger, as its threads log it (outside any request): one
    WARNING line in the entry point's log, none on standard error, and its INFO lines left
    out, however many times entry points attach."""
    log_file = tmp_path / "entry.log"
    sink = logsetup.attach("entry", log_file)
    again = logsetup.attach("entry", tmp_path / "other.log")
    try:
        pool_logger = logging.getLogger("psycopg.pool")
        pool_logger.warning("error connecting in %r: %s", "smime-collector", "refused-4711")
        pool_logger.info("connection requested from %r", "smime-collector")
    finally:
        sink.close()
        again.close()
    rows = [row for row in fields(log_file) if "refused-4711" in row[3]]
    assert [(entry, level, rid) for entry, level, rid, _ in rows] == [("entry", "WARNING", "-")]
    assert "connection requested" not in log_file.read_text("utf-8")
    assert "refused-4711" not in capfd.readouterr().err
