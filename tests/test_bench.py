"""The README's benchmark commands run as written (small counts): the numbers are the bench's
business, but a bench that no longer starts would leave the README's Performance table
unverifiable."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from bench import RESULTS_FILE
from tests.paths import REPO

pytestmark = pytest.mark.slow


def test_the_quick_bench_runs_the_seeds_gmail_message() -> None:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.run",
            "--quick",
            "--only",
            "in-process",
            "--only",
            "revocation",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    rows = json.loads(RESULTS_FILE.read_text("utf-8"))["rows"]
    measured = {row["name"] for row in rows}
    assert "seed's Gmail message, in-process (stored first, then unchanged)" in measured
    assert "unchanged pass: messages/s, 1 core" in measured


def test_the_hostile_cases_are_timed() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "bench.dos", "--only", "huge-exponent-8192"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "huge-exponent-8192" in proc.stdout and "dkim-invalid" in proc.stdout
