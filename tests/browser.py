"""Headless Chromium for the browser tests: Debian's ``chromium``, driven by Playwright.

No browser is downloaded: Playwright launches the system's ``/usr/bin/chromium`` (the Makefile
installs the Debian package). The flags keep it from reaching out to the network on its own
(component updates, sync, safe browsing), which this machine would refuse noisily.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

CHROMIUM = Path("/usr/bin/chromium")
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]


def chromium_path() -> str:
    """The system browser, or a clear failure saying how to get it."""
    found = CHROMIUM if CHROMIUM.exists() else shutil.which("chromium")
    if not found:
        pytest.fail(
            "Debian's chromium is not installed: run `make test` (or apt-get install chromium)"
        )
    return str(found)
