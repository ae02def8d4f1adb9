"""Shared fixtures: the corpus location, a loopback DNS server, generated PKI."""

from tests.paths import require_shared


def pytest_sessionstart(session) -> None:
    require_shared()
