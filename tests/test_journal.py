"""The verdict journal and the folder's index: what the operator page and the gauges read."""

from __future__ import annotations

import logging
import multiprocessing
import os
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes

from smime_collector.journal import MAX_DETAIL_CHARS, JournalEntry
from smime_collector.store import FolderStore, StoreStats
from smime_collector.store.folderjournal import JOURNAL_DIR, MAX_LINE_BYTES, FolderJournal
from smime_collector.verdict import Outcome, Reason, Verdict
from tests import pki
from tests.mailfactory import MailFactory
from webapp import create_app

NOON = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)


def entry(
    at: datetime, email: str = "a@example.org", outcome: str = "rejected", reason: str = "expired"
) -> JournalEntry:
    return JournalEntry(at, outcome, reason, email, "the certificate expired", "sparkpost")


def test_entries_round_trip_and_explain_themselves() -> None:
    verdict = Verdict(Outcome.REJECTED, Reason.DKIM_INVALID, "a@example.org", None, "x" * 2000)
    made = JournalEntry.from_verdict(verdict, NOON, "sparkpost", "<id@x>", "rid1", "env@x")
    assert len(made.detail) == MAX_DETAIL_CHARS
    assert made.explanation == Reason.DKIM_INVALID.explanation
    assert JournalEntry.from_json(made.to_json()) == made
    assert JournalEntry(NOON, "rejected", "from-the-future").explanation == ""
    for junk in ("", "{", "[]", '{"at": "x"}', '{"at": "2026-01-01T00:00:00Z", "bogus": 1}'):
        assert JournalEntry.from_json(junk) is None


def test_newest_first_filtered_and_paged(tmp_path) -> None:
    journal = FolderJournal(tmp_path, 30)
    for n in range(7):
        journal.append(
            entry(
                NOON + timedelta(hours=n * 7),
                f"u{n}@example.org",
                "stored" if n % 2 else "rejected",
            )
        )
    page = journal.page(limit=3)
    assert [e.email for e in page.entries] == ["u6@example.org", "u5@example.org", "u4@example.org"]
    assert page.more
    last = journal.page(offset=6, limit=3)
    assert [e.email for e in last.entries] == ["u0@example.org"] and not last.more
    assert [e.email for e in journal.page(outcome="stored").entries] == [
        "u5@example.org",
        "u3@example.org",
        "u1@example.org",
    ]
    assert [e.email for e in journal.page("U4@").entries] == ["u4@example.org"]
    assert len(list((tmp_path / JOURNAL_DIR).iterdir())) == 3  # one file per UTC day


def test_retention_drops_whole_days(tmp_path) -> None:
    journal = FolderJournal(tmp_path, 3)
    for days in range(6):
        journal.append(entry(NOON + timedelta(days=days)))
    kept = sorted(p.name for p in (tmp_path / JOURNAL_DIR).iterdir())
    # At the first record of 2026-03-15, days before 2026-03-12 went.
    assert kept == [f"verdicts-2026-03-{d}.jsonl" for d in (12, 13, 14, 15)]


def test_the_journal_is_private(tmp_path) -> None:
    journal = FolderJournal(tmp_path, 30)
    journal.append(entry(NOON))
    assert stat.S_IMODE((tmp_path / JOURNAL_DIR).stat().st_mode) == 0o700
    assert stat.S_IMODE(journal.path_for(NOON.date()).stat().st_mode) == 0o600


def test_torn_and_foreign_lines_are_skipped(tmp_path) -> None:
    journal = FolderJournal(tmp_path, 30)
    journal.append(entry(NOON, "first@example.org"))
    path = journal.path_for(NOON.date())
    with path.open("ab") as handle:
        handle.write(b"x" * (MAX_LINE_BYTES + 1) + b"\n" + b"not json\n")
    journal.append(entry(NOON + timedelta(minutes=1), "second@example.org"))
    with path.open("ab") as handle:
        handle.write(entry(NOON + timedelta(minutes=2), "torn@example.org").to_json()[:40].encode())
    assert [e.email for e in journal.page().entries] == ["second@example.org", "first@example.org"]
    assert journal.counts(NOON - timedelta(hours=1)) == {("rejected", "expired"): 2}


def test_counts_follow_new_lines_and_days(tmp_path) -> None:
    journal = FolderJournal(tmp_path, 30)
    journal.append(entry(NOON - timedelta(days=2), reason="expired"))
    journal.append(entry(NOON, reason="untrusted"))
    since = NOON - timedelta(days=1)
    assert journal.counts(since) == {("rejected", "untrusted"): 1}
    journal.append(entry(NOON + timedelta(minutes=5), outcome="stored", reason="ok"))
    journal.append(entry(NOON + timedelta(days=1)))
    assert journal.counts(since) == {
        ("rejected", "untrusted"): 1,
        ("stored", "ok"): 1,
        ("rejected", "expired"): 1,
    }
    assert sum(journal.counts(NOON - timedelta(days=3)).values()) == 4


def test_counts_notice_a_file_replaced_by_a_restore(tmp_path) -> None:
    journal = FolderJournal(tmp_path, 30)
    for minute in range(3):
        journal.append(entry(NOON + timedelta(minutes=minute)))
    assert sum(journal.counts(NOON).values()) == 3
    path = journal.path_for(NOON.date())
    path.unlink()
    journal.append(entry(NOON + timedelta(minutes=9), reason="ok", outcome="stored"))
    assert journal.counts(NOON) == {("stored", "ok"): 1}


def _append_many(folder: str, worker: int, count: int) -> None:
    journal = FolderJournal(Path(folder), 30)
    for n in range(count):
        journal.append(entry(NOON + timedelta(microseconds=n), f"w{worker}-{n}@example.org"))


def test_processes_appending_at_once_never_tear_a_line(tmp_path) -> None:
    """gunicorn's workers append to the same day's file: O_APPEND writes stay whole."""
    context = multiprocessing.get_context("spawn")
    workers = [context.Process(target=_append_many, args=(str(tmp_path), w, 300)) for w in range(4)]
    for process in workers:
        process.start()
    for process in workers:
        process.join(60)
        assert process.exitcode == 0
    lines = FolderJournal(tmp_path, 30).path_for(NOON.date()).read_text().splitlines()
    assert len(lines) == 1200
    assert all(JournalEntry.from_json(line) for line in lines)
    assert len({JournalEntry.from_json(line).email for line in lines}) == 1200


@pytest.fixture(scope="module")
def mail(dns_server, tmp_path_factory: pytest.TempPathFactory) -> MailFactory:
    return MailFactory.create(dns_server, tmp_path_factory.mktemp("journal-pki"))


def test_the_pipeline_records_every_verdict(make_settings, mail) -> None:
    app = create_app(make_settings(trusted_certs=str(mail.ca_file)))
    collector = app.extensions["smime_collector"].collector
    stored = collector.read_smime_email(mail.signed("judy@example.org"), intake="cli")
    rejected = collector.read_smime_email(b"From: nobody\r\n\r\nplain", intake="cli")
    page = collector.store.verdicts()
    assert [(e.outcome, e.reason) for e in page.entries] == [
        (rejected.outcome, rejected.reason),
        (stored.outcome, stored.reason),
    ]
    newest, oldest = page.entries
    assert oldest.email == "judy@example.org" and oldest.message_id
    assert oldest.intake == "cli" and oldest.request_id != "-"
    assert newest.detail == rejected.detail


def test_a_journal_that_cannot_be_written_changes_no_verdict(make_settings, mail, caplog) -> None:
    app = create_app(make_settings(trusted_certs=str(mail.ca_file)))
    collector = app.extensions["smime_collector"].collector
    (collector.store.folder / JOURNAL_DIR).write_text("in the way")  # mkdir fails
    with caplog.at_level(logging.WARNING, "smime_collector"):
        verdict = collector.read_smime_email(mail.signed("kim@example.org"))
    assert verdict.outcome is Outcome.STORED
    assert "verdict journal not written" in caplog.text


# -- the folder's index ----------------------------------------------------------------------


def test_the_index_sees_every_change(tmp_path, mail) -> None:
    store = FolderStore(tmp_path / "certs")
    assert store.stats() == StoreStats(0, 0, None)
    now = datetime.now(UTC).replace(microsecond=0)
    first = pki.make_leaf(
        mail.root, "a@example.org", key_type="ec", not_after=now + timedelta(days=5)
    )
    store.save("a@example.org", first.cert)
    assert [e.email for e in store.list()] == ["a@example.org"]  # right after: no stale view
    second = pki.make_leaf(
        mail.root, "b@example.org", key_type="ec", not_after=now + timedelta(days=50)
    )
    store.save("b@example.org", second.cert)
    stats = store.stats(now + timedelta(days=30))
    assert (stats.count, stats.expiring, stats.earliest_expiry) == (2, 1, now + timedelta(days=5))
    newer = pki.make_leaf(
        mail.root,
        "a@example.org",
        key_type="ec",
        not_before=now - timedelta(hours=1),
        not_after=now + timedelta(days=90),
    )
    assert store.save("a@example.org", newer.cert).changed
    assert store.stats().earliest_expiry == now + timedelta(days=50)
    assert (
        store.search("a@").entries[0].sha256
        == newer.cert.fingerprint(newer.cert.signature_hash_algorithm.__class__()).hex()
    )
    (tmp_path / "certs" / "b@example.org.crt").unlink()
    assert [e.email for e in store.list()] == ["a@example.org"]


def test_the_index_skips_what_is_not_a_certificate(tmp_path, mail) -> None:
    folder = tmp_path / "certs"
    store = FolderStore(folder)
    store.save("a@example.org", pki.make_leaf(mail.root, "a@example.org", key_type="ec").cert)
    (folder / "broken@example.org.crt").write_text("-----BEGIN CERTIFICATE-----\nnope\n")
    os.symlink(folder / "a@example.org.crt", folder / "link@example.org.crt")
    (folder / "notes.txt").write_text("hello")
    assert [e.email for e in store.list()] == ["a@example.org"]
    assert store.stats().count == 1


def test_history_lists_replaced_certificates_newest_first(tmp_path, mail) -> None:
    store = FolderStore(tmp_path / "certs")
    now = datetime.now(UTC)
    leaves = [mail.leaf("h@example.org", now - timedelta(days=days)) for days in (30, 20, 10)]
    for leaf in leaves:
        assert store.save("h@example.org", leaf.cert).changed
    history = store.history("H@example.org")
    assert [h.not_before for h in history] == [
        leaves[1].cert.not_valid_before_utc,
        leaves[0].cert.not_valid_before_utc,
    ]
    assert [h.event for h in history] == ["replaced", "replaced"]
    assert store.history("other@example.org") == []
    assert store.history("../etc@example.org") == []


def test_a_revoked_certificate_leaves_the_index_and_shows_in_history(tmp_path, mail) -> None:
    store = FolderStore(tmp_path / "certs")
    leaf = pki.make_leaf(mail.root, "rex@example.org", key_type="ec")
    other = pki.make_leaf(mail.root, "sue@example.org", key_type="ec")
    store.save("rex@example.org", leaf.cert)
    store.save("sue@example.org", other.cert)
    assert store.stats().count == 2
    store.mark_revoked("rex@example.org", leaf.cert, "revoked by the CA")
    assert [e.email for e in store.list()] == ["sue@example.org"]  # its file is still there
    assert store.stats().count == 1
    assert store.retire_revoked("rex@example.org", leaf.cert, "revoked by the CA")
    (entry,) = store.history("rex@example.org")
    assert (entry.event, entry.sha256) == ("revoked", leaf.cert.fingerprint(hashes.SHA256()).hex())
    assert entry.at is not None and abs(entry.at - datetime.now(UTC)) < timedelta(minutes=5)
