"""Small helpers shared by the tests: relay batches, CLI runs, reading verdicts back."""

from __future__ import annotations

import base64
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from hypothesis import HealthCheck, settings

from tests.paths import REPO

TOKEN_HEADER = "X-MessageSystems-Webhook-Token"

#: Hypothesis settings of the suites that generate whole messages for one collector per test:
#: reproducible (derandomized, no example database), and without the health checks those
#: suites trip on purpose: the collector is function-scoped, so that its store fills up as
#: examples run (stored, then unchanged) as a real service's does, and examples are message-sized.
GENERATED_MAIL = settings(
    derandomize=True,
    database=None,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.large_base_example,
    ],
)


def relay_event(
    raw: bytes, *, as_base64: bool = False, msg_from: str = "sender@example.com"
) -> dict[str, Any]:
    """One SparkPost relay event carrying ``raw`` the way SparkPost sends it."""
    content = (
        base64.b64encode(raw).decode("ascii")
        if as_base64
        else raw.decode("utf-8", "surrogateescape")
    )
    return {
        "msys": {
            "relay_message": {
                "msg_from": msg_from,
                "rcpt_to": "secureme@inbound.example.net",
                "friendly_from": msg_from,
                "customer_id": "1",
                "webhook_id": "1",
                "protocol": "smtp",
                "content": {
                    "email_rfc822": content,
                    "email_rfc822_is_base64": as_base64,
                    "headers": [],
                    "subject": "test",
                },
            }
        }
    }


def post_batch(client, events: list[dict[str, Any]], token: str = "test-token"):
    return client.post(
        "/",
        data=json.dumps(events),
        headers={"Content-Type": "application/json", TOKEN_HEADER: token},
    )


#: The verdict line: time,entry,level,request id,| outcome=...,reason=...,email=...,message_id=...
OUTCOME_LINE = re.compile(
    r"^[\d-]+ [\d:,]+,[\w.-]+,(?:INFO|WARNING|ERROR),[\w.:-]+,"
    r"\| outcome=(\w+),reason=([\w-]+),email=([^,\s]*),message_id=.*,intake=[\w-]+$",
    re.MULTILINE,
)


def logged_verdicts(log_file: Path) -> list[tuple[str, str, str]]:
    """Every verdict line in the log, in order: (outcome, reason, email)."""
    if not log_file.exists():
        return []
    return OUTCOME_LINE.findall(log_file.read_text("utf-8"))


def run_cli(*args: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(REPO / "readSMIMEsig.py"), *map(str, args)],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=300,
    )


def cli_json(*args: str | Path, cwd: Path | None = None) -> tuple[int, list[dict[str, Any]]]:
    proc = run_cli("--json", *args, cwd=cwd)
    return proc.returncode, [json.loads(line) for line in proc.stdout.splitlines() if line]


def sha256_of_pem(path: Path) -> str:
    return x509.load_pem_x509_certificate(path.read_bytes()).fingerprint(hashes.SHA256()).hex()


def visible_files(folder: Path) -> list[str]:
    """What a reader of the certificate folder sees: names without a leading dot."""
    return sorted(p.name for p in folder.iterdir() if not p.name.startswith("."))
