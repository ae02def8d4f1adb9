"""End to end: real gunicorn, the Postman collection replayed by newman, curl, config errors."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys

import pytest

from tests.conftest import write_ini
from tests.corpus import sparky_rows
from tests.helpers import sha256_of_pem, visible_files
from tests.paths import REPO
from tests.servers import free_port, gunicorn_env, start_gunicorn

pytestmark = pytest.mark.slow
POSTMAN_ROW = next(row for row in sparky_rows() if row.name == "postman_collection.json")
NEWMAN = REPO / "node_modules" / ".bin" / "newman"
COLLECTION = REPO / "postman" / "smime-collector.postman_collection.json"
TOKEN = "t0p s3cr3t t0k3n"


@pytest.fixture
def service(tmp_path, dns):
    ini = write_ini(
        tmp_path / "webapp.ini",
        {
            "x-messagesystems-webhook-token": TOKEN,
            "user-certs-dir": "certs",
            "log-file": "webapp.log",
            "dns-nameservers": dns.nameserver,
            "verify-time": POSTMAN_ROW.verify_at.strftime("%Y-%m-%dT%H:%M:%SZ"),
        },
    )
    server = start_gunicorn(ini, tmp_path)
    yield server, tmp_path
    server.stop()


def test_newman_replay_stores_bobs_certificate(service) -> None:
    server, folder = service
    if not NEWMAN.exists():
        pytest.fail("newman is not installed: run `npm ci` (make test does it)")
    proc = subprocess.run(
        [
            str(NEWMAN),
            "run",
            str(COLLECTION),
            "--env-var",
            f"url={server.url}",
            "--env-var",
            f"token={TOKEN}",
            "--color",
            "off",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "relay request accepted (200)" in proc.stdout
    cert = folder / "certs" / f"{POSTMAN_ROW.email}.crt"
    assert sha256_of_pem(cert) == POSTMAN_ROW.fingerprint
    assert visible_files(folder / "certs") == [cert.name]
    log = (folder / "webapp.log").read_text("utf-8")
    assert_matches_readme_example(log.splitlines())
    assert log.count("Request from") == 1  # no duplicate handlers under gunicorn


def readme_log_example() -> list[str]:
    """The log lines the README's "Log" section shows, in order."""
    section = (REPO / "README.md").read_text("utf-8").split("\n## Log\n", 1)[1]
    block = section.split("```\n", 2)[1]
    return [line for line in block.splitlines() if line]


def example_pattern(line: str) -> re.Pattern[str]:
    """A README line as a pattern: any time, any request id, ``...`` for an elided tail, and
    the certificate folder wherever this run put it."""
    _time, entry, level, _rid, message = EXAMPLE_FIELDS.match(line).groups()
    body = re.escape(message).replace(r"\.\.\.", ".*")
    return re.compile(
        rf"^\d{{4}}-\d\d-\d\d \d\d:\d\d:\d\d,\d{{3}},{entry},{level},[0-9a-f]{{12}},{body}$"
    )


EXAMPLE_FIELDS = re.compile(r"^(\S+ \d\d:\d\d:\d\d,\d{3}),([\w.-]+),(\w+),([\w.:-]+),(.*)$")


def assert_matches_readme_example(log: list[str]) -> None:
    """Every README line appears in the log, in the README's order, one request id for all."""
    example = readme_log_example()
    assert len(example) >= 10, "the README's Log section lost its example"
    at = 0
    ids = set()
    for line in example:
        pattern = example_pattern(line)
        while at < len(log) and not pattern.match(log[at]):
            at += 1
        assert at < len(log), f"README log line not found in this order: {line}"
        ids.add(EXAMPLE_FIELDS.match(log[at])[4])
        at += 1
    assert len(ids) == 1, f"one request, one request id: {ids}"


def test_curl_answers_like_the_readme_says(service) -> None:
    server, _folder = service
    curl = shutil.which("curl")
    if curl is None:
        pytest.skip("curl is not installed")
    base = [curl, "-s", "-o", "/dev/null", "-w", "%{http_code}", server.url]
    json_type = ["-H", "Content-Type: application/json"]
    assert (
        subprocess.run([*base, *json_type, "-d", "[]"], capture_output=True, text=True).stdout
        == "401"
    )
    ok = [*base, *json_type, "-H", f"X-MessageSystems-Webhook-Token: {TOKEN}", "-d", "[]"]
    assert subprocess.run(ok, capture_output=True, text=True).stdout == "200"


@pytest.mark.parametrize(
    ("values", "key"),
    [
        ({"dkim": "maybe"}, "dkim"),
        ({"trusted-certs": "missing-bundle.pem"}, "missing-bundle.pem"),
        ({"dns-timeout": "soon"}, "dns-timeout"),
        ({"verify-time": "yesterday"}, "verify-time"),
        ({"metric-token": "x"}, "metric-token"),  # a typo'd key stops start-up
    ],
)
def test_config_error_stops_start_up_with_one_line(tmp_path, values, key) -> None:
    ini = write_ini(tmp_path / "webapp.ini", {"log-file": "webapp.log", **values})
    proc = subprocess.run(
        [sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py", "webapp:app"],
        cwd=REPO,
        env=gunicorn_env(ini, free_port(), 1, tmp_path),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode != 0
    lines = [line for line in proc.stderr.splitlines() if "configuration error" in line]
    assert len(lines) == 1 and key in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr


def test_missing_config_file_stops_start_up(tmp_path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py", "webapp:app"],
        cwd=REPO,
        env=gunicorn_env(tmp_path / "absent.ini", free_port(), 1, tmp_path),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode != 0
    assert "configuration file not found" in proc.stderr
