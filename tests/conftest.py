"""Shared fixtures: the corpus location, a loopback DNS server, settings and apps per test."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from flask.testing import FlaskClient

from smime_collector.config import Settings
from smime_collector.web import create_app
from tests.dnsserver import LoopbackDNS, load_zone_file
from tests.httpsserver import HTTPSServer
from tests.intakes import Case, Recording, SNSSigner, alice, bob, eight_bit, recording
from tests.mailfactory import MailFactory
from tests.paths import SPARKY, require_shared
from tests.postgres import PASSWORD, Postgres


def pytest_sessionstart(session: pytest.Session) -> None:
    require_shared()


@pytest.fixture(scope="session")
def dns_server() -> Iterator[LoopbackDNS]:
    """A real DNS server on 127.0.0.1 serving the Gmail key of the seed's messages."""
    server = LoopbackDNS(load_zone_file(SPARKY / "dns-zone.txt"), ttl=300).start()
    yield server
    server.stop()


@pytest.fixture
def dns(dns_server: LoopbackDNS) -> Iterator[LoopbackDNS]:
    """The session DNS server, put back to normal answers after each test."""
    dns_server.mode = "normal"
    yield dns_server
    dns_server.mode = "normal"


@pytest.fixture(scope="module")
def cases(dns_server: LoopbackDNS, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Case]:
    """The messages the doors' tests send, by name: the seed's Bob, Thunderbird's Alice, and an
    8-bit message signed by a PKI and DKIM key made once per module."""
    factory = MailFactory.create(dns_server, tmp_path_factory.mktemp("door-pki"))
    return {"bob": bob(), "alice": alice(), "8bit": eight_bit(factory)}


@pytest.fixture(scope="session")
def postgres() -> Iterator[Postgres]:
    """A throwaway PostgreSQL cluster on 127.0.0.1, shared by the session (one database per
    test through ``database``), stopped by pid and deleted at the end."""
    cluster = Postgres.create()
    try:
        yield cluster.start()
    finally:
        cluster.destroy()


@pytest.fixture
def database(postgres: Postgres, tmp_path: Path) -> dict[str, str]:
    """A fresh database: the configuration keys that point a test's collector at it, the
    password read from a ``database-password-file`` as an operator would set it."""
    password_file = tmp_path / "database-password"
    password_file.write_text(PASSWORD + "\n")
    return {
        "store": "postgresql",
        "database-url": postgres.url(postgres.new_database()),
        "database-password-file": str(password_file),
    }


@pytest.fixture(params=["folder", "postgresql"])
def store_keys(request: pytest.FixtureRequest) -> dict[str, str]:
    """Configuration keys selecting each store backend (a fresh database for postgresql)."""
    return {} if request.param == "folder" else request.getfixturevalue("database")


SettingsFactory = Callable[..., Settings]


@pytest.fixture
def make_settings(tmp_path: Path, dns: LoopbackDNS) -> SettingsFactory:
    """Settings for a test: its own folder, log and the loopback DNS; keys as in the INI file."""

    def build(**overrides: str) -> Settings:
        values = {
            "x-messagesystems-webhook-token": "test-token",
            "user-certs-dir": str(tmp_path / "certs"),
            "log-file": str(tmp_path / "webapp.log"),
            "dns-nameservers": dns.nameserver,
            "dns-timeout": "1",
            # No test reaches the internet: fetching is on only where a test serves the URLs.
            "revocation-fetch": "no",
        }
        values.update({key.replace("_", "-"): value for key, value in overrides.items()})
        return Settings.from_mapping(values, tmp_path, "test")

    return build


RecordingClient = Callable[[Settings], tuple[FlaskClient, Recording, Path]]


@pytest.fixture
def recording_client() -> Iterator[RecordingClient]:
    """``recording_client(settings)`` → (test client, recording collector, certificate folder)
    of the app over the real pipeline, keeping what each door handed it; the collectors'
    stores are closed after the test."""
    built: list[Recording] = []

    def build(settings: Settings) -> tuple[FlaskClient, Recording, Path]:
        collector = recording(settings)
        built.append(collector)
        return create_app(settings, collector).test_client(), collector, settings.user_certs_dir

    yield build
    for collector in built:
        collector.store.close()


def write_ini(path: Path, values: dict[str, str]) -> Path:
    """An INI file with a [webapp] section, for the CLI and gunicorn. Revocation fetching is
    off unless ``values`` turn it on: no test reaches the internet."""
    values = {"revocation-fetch": "no", **values}
    lines = ["[webapp]", *(f"{key} = {value}" for key, value in values.items())]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def https_server(tmp_path_factory) -> Iterator[HTTPSServer]:
    """A real HTTPS server on 127.0.0.1 (``tests/httpsserver.py``) with its own test CA, for
    the SNS signing certificate and SubscribeURL; stopped by pid."""
    server = HTTPSServer.start(tmp_path_factory.mktemp("https"))
    yield server
    server.stop()


@pytest.fixture(scope="session")
def sns_signer(https_server: HTTPSServer) -> SNSSigner:
    """A test SNS signing key whose certificate the HTTPS server serves."""
    signer = SNSSigner(https_server.root, f"{https_server.base}/SimpleNotificationService-t.pem")
    (https_server.folder / "SimpleNotificationService-t.pem").write_bytes(
        signer.identity.cert_pem()
    )
    return signer
