"""``readSMIMEsig.py --export DIR`` and ``--import DIR``: round trips between the stores.

A folder with history (replaced and refused certificates, a journal) is imported into a real
PostgreSQL and exported back: the same files, byte for byte, and the same history, with its
original times and reasons. Imports apply the supersede rule, run twice change nothing, and a
database that is down is exit 75 with nothing lost.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from smime_collector.store import FolderStore, Why
from smime_collector.store.postgres import PostgresStore
from smime_collector.trust import fingerprint
from tests import pki
from tests.conftest import write_ini
from tests.helpers import run_cli
from tests.paths import REPO
from tests.postgres import PASSWORD, Postgres, bin_dir

pytestmark = pytest.mark.slow

NOW = dt.datetime.now(dt.UTC)
ALICE, BOB = "alice@example.com", "bob@example.org"


@pytest.fixture(scope="module")
def make_cert() -> Callable[..., x509.Certificate]:
    root = pki.make_root("Transfer Root", key_type="ec")

    def make(address: str, days_ago: float) -> x509.Certificate:
        not_before = NOW - dt.timedelta(days=days_ago)
        return pki.make_leaf(root, address, key_type="ec", cn="", not_before=not_before).cert

    return make


def tree(folder: Path) -> dict[str, bytes]:
    """Every certificate file below ``folder`` (relative name → bytes); journals apart."""
    return {
        str(p.relative_to(folder)): p.read_bytes()
        for p in sorted(folder.rglob("*.crt"))
        if not p.name.startswith(".")
    }


def journal_keys(store, address: str) -> list[tuple[str, str, str]]:
    return [e.key for e in store.history(address)]


def ini_for(tmp_path: Path, values: dict[str, str]) -> Path:
    return write_ini(tmp_path / "webapp.ini", {"log-file": "webapp.log", **values})


@pytest.fixture
def seeded_folder(tmp_path: Path, make_cert) -> FolderStore:
    """A folder as the service leaves it: Alice replaced twice and refused once, Bob once."""
    folder = FolderStore(tmp_path / "source")
    a1, a2, a3 = (make_cert(ALICE, d) for d in (30, 20, 10))
    for cert in (a1, a2, a3, a1):
        folder.save(ALICE, cert)
    folder.save(BOB, make_cert(BOB, 5))
    assert [e.event for e in folder.history(ALICE)] == [
        Why.REFUSED_OLDER,
        Why.REPLACED,
        Why.REPLACED,
    ]
    return folder


def test_folder_to_database_and_back_is_the_same(
    tmp_path, seeded_folder, database, postgres: Postgres
) -> None:
    ini = ini_for(tmp_path, database)
    proc = run_cli("--config", ini, "--import", seeded_folder.folder, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.startswith("imported 2 addresses from ")
    assert "certificates 2 stored; 3 history entries added" in proc.stdout

    db = PostgresStore(database["database-url"], PASSWORD)
    try:
        for address in (ALICE, BOB):
            assert db.get(address) == seeded_folder.get(address)
            assert journal_keys(db, address) == journal_keys(seeded_folder, address)
        again = run_cli("--config", ini, "--json", "--import", seeded_folder.folder)
        assert again.returncode == 0
        report = json.loads(again.stdout)
        assert (report["outcomes"], report["history_added"]) == ({"unchanged": 2}, 0)
        assert journal_keys(db, ALICE) == journal_keys(seeded_folder, ALICE), "nothing doubled"

        exported = tmp_path / "exported"
        proc = run_cli("--config", ini, "--export", exported, cwd=tmp_path)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert proc.stdout.startswith(f"exported 2 addresses from {db.description} to ")
        assert tree(exported) == tree(seeded_folder.folder), "the same files, byte for byte"
        out = FolderStore(exported)
        for address in (ALICE, BOB):
            assert journal_keys(out, address) == journal_keys(seeded_folder, address)
    finally:
        db.close()


def test_database_to_database_keeps_history_and_the_rule(
    tmp_path, make_cert, postgres: Postgres
) -> None:
    """Export one database, import into another that already holds a newer certificate for
    Alice and an older one for Bob: the newer wins on both sides, nothing is lost."""
    first = PostgresStore(postgres.url(postgres.new_database()), PASSWORD)
    second = PostgresStore(postgres.url(postgres.new_database()), PASSWORD)
    try:
        for store in (first, second):
            store.prepare()
        old_alice, alice_first = make_cert(ALICE, 30), make_cert(ALICE, 20)
        bob_old, bob_first = make_cert(BOB, 40), make_cert(BOB, 3)
        alice_second = make_cert(ALICE, 1)
        first.save(ALICE, old_alice)
        first.save(ALICE, alice_first)
        first.save(BOB, bob_first)
        second.save(ALICE, alice_second)
        second.save(BOB, bob_old)

        folder = tmp_path / "moving"
        ini = ini_for(tmp_path, {"store": "postgresql", "database-url": first.url})
        env_password = {"PGPASSWORD": PASSWORD}
        proc = run_env(env_password, "--config", ini, "--export", folder)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        ini = ini_for(tmp_path, {"store": "postgresql", "database-url": second.url})
        proc = run_env(env_password, "--config", ini, "--json", "--import", folder)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        report = json.loads(proc.stdout)
        assert report["outcomes"] == {"older-than-stored": 1, "stored": 1}
        assert second.get(ALICE) == alice_second, "the newer certificate already there stays"
        assert second.get(BOB) == bob_first, "the older one there is replaced"
        alice = [(e.sha256, e.event) for e in second.history(ALICE)]
        assert (fingerprint(old_alice), Why.REPLACED) in alice, "history came along"
        assert (fingerprint(alice_first), Why.REFUSED_OLDER) in alice
        assert [(e.sha256, e.event) for e in second.history(BOB)] == [
            (fingerprint(bob_old), Why.REPLACED)
        ]
    finally:
        first.close()
        second.close()


def run_env(env: dict[str, str], *args: str | Path) -> subprocess.CompletedProcess[str]:
    """The CLI with more environment (``PGPASSWORD``)."""
    return subprocess.run(
        [sys.executable, str(REPO / "readSMIMEsig.py"), *map(str, args)],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, **env},
    )


def test_export_skips_what_a_folder_cannot_name(tmp_path, make_cert, database) -> None:
    db = PostgresStore(database["database-url"], PASSWORD)
    try:
        db.prepare()
        slash = "a/b@example.com"
        assert db.save(slash, make_cert(slash, 1)).changed
        assert db.save(ALICE, make_cert(ALICE, 1)).changed
    finally:
        db.close()
    proc = run_cli("--config", ini_for(tmp_path, database), "--export", tmp_path / "out")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert f"skipped {slash}: address contains the character '/'" in proc.stdout
    assert sorted(p.name for p in (tmp_path / "out").glob("*.crt")) == [f"{ALICE}.crt"]


def test_a_database_that_is_down_is_exit_75(tmp_path, seeded_folder) -> None:
    url = "postgresql://collector@127.0.0.1:9/nothing"  # the discard port: nobody answers
    proc = run_cli(
        "--config",
        ini_for(tmp_path, {"store": "postgresql", "database-url": url}),
        "--import",
        seeded_folder.folder,
    )
    assert proc.returncode == 75, proc.stdout + proc.stderr
    assert "store unavailable, nothing lost, run it again" in proc.stdout


def test_import_needs_a_folder_and_no_messages(tmp_path) -> None:
    proc = run_cli("--config", ini_for(tmp_path, {}), "--import", tmp_path / "absent")
    assert proc.returncode == 2 and "is not a folder" in proc.stdout
    proc = run_cli("--config", ini_for(tmp_path, {}), "--import", tmp_path, "x.eml")
    assert proc.returncode == 2 and "exclude each other" in proc.stderr


def test_folder_to_folder_export_is_a_copy(tmp_path, seeded_folder) -> None:
    """With ``store = folder`` an export copies the folder (for a consumer on another host)."""
    ini = ini_for(tmp_path, {"user-certs-dir": str(seeded_folder.folder)})
    proc = run_cli("--config", ini, "--export", "copy", cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert tree(tmp_path / "copy") == tree(seeded_folder.folder)
    pem = (tmp_path / "copy" / f"{ALICE}.crt").read_bytes()
    assert pem == seeded_folder.get(ALICE).public_bytes(serialization.Encoding.PEM)


def readme_commands(prefix: str) -> list[str]:
    """The README's command lines starting with ``prefix``, as written."""
    readme = (REPO / "README.md").read_text("utf-8")
    return [line.strip() for line in readme.splitlines() if line.strip().startswith(prefix)]


def test_the_readme_backup_and_restore(tmp_path, make_cert, postgres: Postgres) -> None:
    """``pg_dump`` of a live store and ``pg_restore`` into an empty database, as written."""
    source = PostgresStore(postgres.url(postgres.new_database()), PASSWORD)
    restored = PostgresStore(postgres.url(postgres.new_database()), PASSWORD)
    try:
        source.prepare()
        old, new = make_cert(ALICE, 9), make_cert(ALICE, 1)
        source.save(ALICE, old)
        source.save(ALICE, new)
        source.save(ALICE, old)
        commands = readme_commands("pg_dump ") + readme_commands("pg_restore ")
        assert len(commands) == 2, commands
        env = {
            **os.environ,
            "PATH": f"{bin_dir()}:{os.environ['PATH']}",
            "PGPASSWORD": PASSWORD,
        }
        for command, url in zip(commands, (source.url, restored.url), strict=True):
            proc = subprocess.run(
                ["bash", "-c", command],
                env={**env, "DATABASE_URL": url},
                cwd=tmp_path,
                capture_output=True,
                text=True,
                timeout=120,
            )
            assert proc.returncode == 0, proc.stderr
        assert restored.get(ALICE) == new
        assert [e.key for e in restored.history(ALICE)] == [e.key for e in source.history(ALICE)]
        assert restored.save(BOB, make_cert(BOB, 1)).changed, "the restored store works"
        assert restored.health().ok
    finally:
        source.close()
        restored.close()


def test_the_readme_import_and_export_commands(tmp_path, make_cert, database) -> None:
    """The two README lines, run as written from a folder holding webapp.ini and certs/."""
    seeded = FolderStore(tmp_path / "certs")
    for cert in (make_cert(ALICE, 9), make_cert(ALICE, 1)):
        seeded.save(ALICE, cert)
    ini_for(tmp_path, database)
    program = ".venv/bin/python readSMIMEsig.py "
    lines = [line.split("#")[0].strip() for line in readme_commands(program + "--config")]
    lines = [line for line in lines if "--import" in line or "--export" in line]
    assert [line.split()[-2] for line in lines] == ["--import", "--export"], lines
    for line in lines:
        proc = run_cli(*line.removeprefix(program).split(), cwd=tmp_path)
        assert proc.returncode == 0, proc.stdout + proc.stderr
    assert tree(tmp_path / "certs-export") == tree(tmp_path / "certs")


def test_revocations_and_issuers_travel_with_an_export(tmp_path, make_cert, database) -> None:
    """A certificate retired as revoked stays refused in the store an export is loaded into;
    the issuers kept for --recheck come along."""
    source = FolderStore(tmp_path / "source")
    retired, current = make_cert(ALICE, 9), make_cert(BOB, 1)
    issuers = [b"\x30\x03\x02\x01\x01"]  # kept as opaque bytes: never parsed by the store
    source.save(ALICE, retired)
    assert source.retire_revoked(ALICE, retired, "revoked: keyCompromise")
    source.save(BOB, current, chain=issuers)
    proc = run_cli("--config", ini_for(tmp_path, database), "--import", source.folder)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    db = PostgresStore(database["database-url"], PASSWORD)
    try:
        assert db.is_revoked(ALICE, retired) and db.get(ALICE) is None
        assert db.save(ALICE, retired).check.reason == "revoked"
        assert db.chain(BOB) == issuers
        [entry] = db.history(ALICE)
        assert (entry.event, entry.detail) == (Why.REVOKED, "revoked: keyCompromise")
    finally:
        db.close()
    back = tmp_path / "back"
    proc = run_cli("--config", ini_for(tmp_path, database), "--export", back)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    exported = FolderStore(back)
    assert exported.is_revoked(ALICE, retired) and exported.chain(BOB) == issuers
    assert tree(back) == tree(source.folder)
