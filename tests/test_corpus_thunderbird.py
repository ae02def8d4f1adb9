"""Every row of Thunderbird's NSS-generated S/MIME suite through the CLI (OpenSSL is the oracle).

DKIM is off (the corpus has none) and the folder's TestCA.pem is the only anchor. Rows signed
with SHA-1 are ``weak-algorithm`` by default and stored with ``allow-sha1 = yes``.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import write_ini
from tests.corpus import ThunderbirdRow, thunderbird_rows
from tests.helpers import cli_json
from tests.paths import THUNDERBIRD

ROWS = thunderbird_rows()


def _run(folder: Path, allow_sha1: bool) -> tuple[int, dict[str, dict]]:
    folder.mkdir()
    ini = write_ini(
        folder / "webapp.ini",
        {
            "user-certs-dir": "certs",
            "log-file": "cli.log",
            "trusted-certs": str(THUNDERBIRD / "TestCA.pem"),
            "dkim": "off",
            "allow-sha1": "yes" if allow_sha1 else "no",
        },
    )
    code, results = cli_json("--config", ini, *(THUNDERBIRD / row.file for row in ROWS))
    return code, {Path(r["file"]).name: r for r in results}


@pytest.fixture(scope="module")
def default_run(tmp_path_factory) -> tuple[int, dict[str, dict]]:
    return _run(tmp_path_factory.mktemp("tb") / "default", allow_sha1=False)


@pytest.fixture(scope="module")
def sha1_run(tmp_path_factory) -> tuple[int, dict[str, dict]]:
    return _run(tmp_path_factory.mktemp("tb") / "sha1", allow_sha1=True)


def _got(result: dict) -> str:
    if result["outcome"] in ("stored", "unchanged"):
        return f"store:{result['email']}"
    return f"reject:{result['reason']}"


@pytest.mark.parametrize("row", ROWS, ids=lambda r: r.file)
def test_row_by_default(row: ThunderbirdRow, default_run) -> None:
    expected = row.expected
    if row.sha1 and expected.startswith("store:"):
        expected = "reject:weak-algorithm"
    assert _got(default_run[1][row.file]) == expected


@pytest.mark.parametrize("row", ROWS, ids=lambda r: r.file)
def test_row_with_sha1_allowed(row: ThunderbirdRow, sha1_run) -> None:
    assert _got(sha1_run[1][row.file]) == row.expected


def test_exit_code_and_stored_files(sha1_run, default_run) -> None:
    assert default_run[0] == 1 and sha1_run[0] == 1  # the suite holds rejects
    stored = {r["path"] for r in sha1_run[1].values() if r["path"]}
    assert {Path(p).name for p in stored} == {"alice@example.com.crt", "dave@example.com.crt"}
