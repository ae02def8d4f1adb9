"""The folder backend's verdict journal: one JSON-lines file per UTC day under ``.verdicts/``.

A file per day makes retention a matter of deleting whole files (at the first append of each
day) and bounds what any reader parses. Appends are single ``write`` calls on an ``O_APPEND``
descriptor, so lines from several gunicorn workers never interleave. They are not fsynced: the
journal survives restarts and crashes of the service, but a power cut may lose its last seconds
(the certificates themselves are fsynced). The folder and its files are readable by the
service's user only, because they hold email addresses.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import threading
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path

from smime_collector.journal import JournalEntry, JournalPage

log = logging.getLogger(__name__)

JOURNAL_DIR = ".verdicts"
_NAME = re.compile(r"^verdicts-(\d{4}-\d{2}-\d{2})\.jsonl$")
#: A record is well under 2 KiB; a longer line is not one of ours and is skipped unread.
MAX_LINE_BYTES = 16 * 1024
#: One day's file stops growing here (a flood of mail must not fill the disk); the log says so.
MAX_DAY_BYTES = 256 * 1024 * 1024
#: Read a day's file backwards in blocks of this size when listing newest first.
READ_BLOCK = 256 * 1024


@dataclass
class _Counted:
    """The (time, outcome, reason) of each record of one file read so far, and where to go on."""

    inode: int
    offset: int = 0
    rows: list[tuple[datetime, str, str]] = field(default_factory=list)


class FolderJournal:
    """Verdicts under ``<folder>/.verdicts/``, kept for ``retention_days`` days."""

    def __init__(self, folder: Path, retention_days: int) -> None:
        self.dir = folder / JOURNAL_DIR
        self.retention_days = retention_days
        self._pruned: date | None = None
        self._counted: dict[str, _Counted] = {}
        self._lock = threading.Lock()

    def path_for(self, day: date) -> Path:
        return self.dir / f"verdicts-{day.isoformat()}.jsonl"

    def append(self, entry: JournalEntry) -> None:
        day = entry.at.date()
        line = (entry.to_json() + "\n").encode("utf-8")
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
        try:
            fd = os.open(self.path_for(day), flags, 0o600)
        except FileNotFoundError:  # the folder is made when missing, not checked per record
            self.dir.mkdir(mode=0o700, parents=True, exist_ok=True)
            fd = os.open(self.path_for(day), flags, 0o600)
        try:
            if os.fstat(fd).st_size + len(line) > MAX_DAY_BYTES:
                log.warning(
                    "verdict journal for %s is full (%d bytes): record dropped", day, MAX_DAY_BYTES
                )
                return
            os.write(fd, line)
        finally:
            os.close(fd)
        if self._pruned != day:
            self.prune(day)

    def prune(self, today: date) -> None:
        """Delete the days older than the retention."""
        cutoff = today - timedelta(days=self.retention_days)
        for day, path in self._days():
            if day < cutoff:
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
        self._pruned = today

    def _days(self) -> list[tuple[date, Path]]:
        """Each day's file, newest first."""
        try:
            names = os.listdir(self.dir)
        except FileNotFoundError:
            return []
        found = []
        for name in names:
            match = _NAME.match(name)
            if match:
                with contextlib.suppress(ValueError):
                    found.append((date.fromisoformat(match[1]), self.dir / name))
        return sorted(found, reverse=True)

    def page(
        self, text: str = "", outcome: str = "", offset: int = 0, limit: int = 50
    ) -> JournalPage:
        """Matching entries newest first: reads backwards and stops once the page is full."""
        wanted: list[JournalEntry] = []
        skipped = 0
        for entry in self._newest_first():
            if (outcome and entry.outcome != outcome) or not entry.matches(text):
                continue
            if skipped < offset:
                skipped += 1
                continue
            wanted.append(entry)
            if len(wanted) > limit:
                break
        return JournalPage(wanted[:limit], offset, limit, len(wanted) > limit)

    def _newest_first(self) -> Iterator[JournalEntry]:
        for _day, path in self._days():
            entries = [e for e in map(JournalEntry.from_json, _lines_backwards(path)) if e]
            entries.sort(key=lambda e: e.at, reverse=True)  # workers append in near order only
            yield from entries

    def counts(self, since: datetime) -> Counter[tuple[str, str]]:
        """(outcome, reason) → verdicts at or after ``since``. Files are read once and then
        only their new lines, so a dashboard refresh does not re-read a week of records."""
        found: Counter[tuple[str, str]] = Counter()
        with self._lock:
            days = self._days()
            for day, path in days:
                if day < since.date():
                    break
                for at, outcome, reason in self._rows(path):
                    if at >= since:
                        found[outcome, reason] += 1
            live = {path.name for _day, path in days}
            for name in set(self._counted) - live:
                del self._counted[name]
        return found

    def _rows(self, path: Path) -> list[tuple[datetime, str, str]]:
        try:
            with path.open("rb") as handle:
                stat = os.fstat(handle.fileno())
                counted = self._counted.get(path.name)
                if counted is None or counted.inode != stat.st_ino or stat.st_size < counted.offset:
                    counted = self._counted[path.name] = _Counted(stat.st_ino)
                handle.seek(counted.offset)
                data = handle.read(stat.st_size - counted.offset)
        except FileNotFoundError:
            return []
        end = data.rfind(b"\n") + 1  # a line still being written is read next time
        for raw in data[:end].splitlines():
            entry = _entry(raw)
            if entry:
                counted.rows.append((entry.at, entry.outcome, entry.reason))
        counted.offset += end
        return counted.rows


def _entry(raw: bytes) -> JournalEntry | None:
    if len(raw) > MAX_LINE_BYTES:
        return None
    return JournalEntry.from_json(raw.decode("utf-8", "replace"))


def _lines_backwards(path: Path) -> Iterator[str]:
    """The file's complete lines, last first, read in blocks from the end."""
    try:
        handle = path.open("rb")
    except FileNotFoundError:
        return
    with handle:
        position = handle.seek(0, os.SEEK_END)
        tail = b""
        while position > 0:
            step = min(READ_BLOCK, position)
            position -= step
            handle.seek(position)
            lines = (handle.read(step) + tail).split(b"\n")
            tail = lines.pop(0)  # may continue in the block before
            for raw in reversed(lines):
                if raw and len(raw) <= MAX_LINE_BYTES:
                    yield raw.decode("utf-8", "replace")
        if tail and len(tail) <= MAX_LINE_BYTES:
            yield tail.decode("utf-8", "replace")
