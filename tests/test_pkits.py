"""NIST PKITS: every one of its 224 S/MIME messages through the CLI, against PKITS's results.

The expected verdicts are in ``tests/pkits_expected.tsv`` (derived from PKITS.pdf's default
initial inputs; its header says how). The messages carry their intermediate CA certificates and
CRLs; the run uses only those (``revocation-fetch = no``) with ``revocation = hard``, so a
revoked certificate, a CRL that fails verification and a missing CRL each have a verdict.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from asn1crypto import pem as asn1_pem

from smime_collector.message import parse_message
from smime_collector.rawcms import members
from smime_collector.smime import find_signature
from tests.conftest import write_ini
from tests.helpers import cli_json
from tests.paths import PKITS, REPO

MANIFEST = REPO / "tests" / "pkits_expected.tsv"
VERIFY_TIME = "2011-04-15T00:00:00Z"


def manifest() -> dict[str, tuple[str, str, str]]:
    rows = {}
    for line in MANIFEST.read_text("utf-8").splitlines():
        if line.startswith("#") or not line.strip():
            continue
        name, pkits, outcome, reason = line.split("\t")
        rows[name] = (pkits, outcome, reason)
    return rows


@pytest.fixture(scope="module")
def verdicts(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, dict]]:
    if not (PKITS / "smime").is_dir():
        pytest.fail(f"the PKITS corpus is missing: expected {PKITS}/smime beside the repository")
    tmp = tmp_path_factory.mktemp("pkits")
    ini = write_ini(
        tmp / "pkits.ini",
        {
            "user-certs-dir": str(tmp / "certs"),
            "log-file": str(tmp / "pkits.log"),
            "trusted-certs": str(PKITS / "anchors" / "TrustAnchorRootCertificate.pem"),
            "dkim": "off",
            "verify-time": VERIFY_TIME,
            "revocation": "hard",
            "revocation-fetch": "no",
        },
    )
    files = sorted((PKITS / "smime").glob("*.eml"))
    _, lines = cli_json("--config", ini, *files)
    return tmp / "certs", {Path(line["file"]).name: line for line in lines}


def test_the_manifest_covers_every_message() -> None:
    names = {p.name for p in (PKITS / "smime").glob("*.eml")}
    assert len(names) == 224
    assert set(manifest()) == names


def test_every_message_agrees_with_pkits(verdicts) -> None:
    _, got = verdicts
    disagreements = []
    for name, (pkits, outcome, reason) in sorted(manifest().items()):
        line = got.get(name)
        seen = (line["outcome"], line["reason"]) if line else None
        if seen != (outcome, reason):
            disagreements.append(f"{name} (PKITS: {pkits}): want {outcome}/{reason}, got {seen}")
    assert not disagreements, "\n".join(disagreements)


def test_no_path_pkits_calls_invalid_is_stored(verdicts) -> None:
    _, got = verdicts
    for name, (pkits, _, _) in manifest().items():
        if pkits == "invalid":
            assert got[name]["outcome"] in ("rejected", "tempfail"), name


def test_stored_certificates_are_the_bytes_that_arrived(verdicts) -> None:
    folder, got = verdicts
    stored = [name for name, line in got.items() if line["outcome"] == "stored"]
    assert len(stored) == 6
    for name in stored:
        raw = (PKITS / "smime" / name).read_bytes()
        part = find_signature(parse_message(raw).top)
        arrived = set(members(part.cms_der).certificates)
        pem = Path(got[name]["path"]).read_bytes()
        _, _, der = asn1_pem.unarmor(pem)
        assert der in arrived, name
        assert Path(got[name]["path"]).parent == folder
