"""Every row of the sparkySecure manifest, through the CLI and through HTTP, at its verify time."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import write_ini
from tests.corpus import SparkyRow, sparky_rows
from tests.helpers import cli_json, logged_verdicts, post_batch, relay_event, sha256_of_pem
from tests.paths import SPARKY
from webapp import create_app

ROWS = sparky_rows()
EXIT = {"stored": 0, "rejected": 1}


def _iso(row: SparkyRow) -> str:
    return row.verify_at.strftime("%Y-%m-%dT%H:%M:%SZ") if row.verify_at else ""


def _assert_store(row: SparkyRow, certs: Path) -> None:
    if row.outcome == "stored":
        path = certs / f"{row.email}.crt"
        assert sha256_of_pem(path) == row.fingerprint
        assert path.read_bytes().count(b"BEGIN CERTIFICATE") == 1
    else:
        assert not certs.exists() or not any(certs.glob("*.crt"))


@pytest.mark.parametrize("row", ROWS, ids=lambda r: r.name)
def test_manifest_row_via_cli(row: SparkyRow, tmp_path: Path, dns) -> None:
    source = tmp_path / "message.eml"
    source.write_bytes(row.raw)
    ini = write_ini(
        tmp_path / "webapp.ini",
        {
            "user-certs-dir": "certs",
            "log-file": "cli.log",
            "dns-nameservers": dns.nameserver,
            "dns-timeout": "2",
            "verify-time": _iso(row),
        },
    )
    code, results = cli_json("--config", ini, source)
    assert code == EXIT[row.outcome]
    assert [(r["outcome"], r["reason"]) for r in results] == [(row.outcome, row.reason)]
    if row.outcome == "stored":
        assert results[0]["email"] == row.email
        assert results[0]["path"] == str(tmp_path / "certs" / f"{row.email}.crt")
    _assert_store(row, tmp_path / "certs")


@pytest.mark.parametrize("row", ROWS, ids=lambda r: r.name)
def test_manifest_row_via_http(row: SparkyRow, make_settings, tmp_path: Path) -> None:
    settings = make_settings(verify_time=_iso(row))
    client = create_app(settings).test_client()
    response = post_batch(client, [relay_event(row.raw)])
    assert response.status_code == 200
    assert response.get_json()["message"] == "OK"
    outcome, reason, _email = logged_verdicts(settings.log_file)[-1]
    assert (outcome, reason) == (row.outcome, row.reason)
    _assert_store(row, settings.user_certs_dir)


def test_seed_ca_bundle_gives_the_same_answer(make_settings) -> None:
    """The seed's own ca-bundle.crt (an operator's bundle) trusts Bob's chain too."""
    row = ROWS[0]
    settings = make_settings(verify_time=_iso(row), trusted_certs=str(SPARKY / "ca-bundle.crt"))
    client = create_app(settings).test_client()
    assert post_batch(client, [relay_event(row.raw)]).status_code == 200
    _assert_store(row, settings.user_certs_dir)


def test_verifying_now_finds_bobs_certificate_expired(make_settings) -> None:
    """Without verify-time the 2018 certificate is judged today: expired, nothing stored."""
    client = create_app(make_settings()).test_client()
    settings = client.application.extensions["smime_collector"].collector.settings
    assert post_batch(client, [relay_event(ROWS[0].raw)]).status_code == 200
    assert logged_verdicts(settings.log_file)[-1][:2] == ("rejected", "expired")
