"""Where the CLI's messages come from: files, folders, mbox files and Maildir folders."""

from __future__ import annotations

import mailbox
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Source:
    """One message to judge: a name for the report and a way to read its bytes."""

    name: str
    read: Callable[[], bytes]


def is_maildir(path: Path) -> bool:
    return (path / "cur").is_dir() and (path / "new").is_dir()


def is_mbox(path: Path) -> bool:
    try:
        with path.open("rb") as handle:
            return handle.read(5) == b"From "
    except OSError:
        return False


def collect(paths: list[str]) -> list[Source]:
    """Expand command-line paths into messages, in a stable order."""
    sources: list[Source] = []
    boxes = _MboxFiles()
    for name in paths:
        path = Path(name)
        if path.is_dir():
            sources.extend(_folder(path, boxes))
        else:
            sources.extend(_file(path, name, boxes))
    return sources


def _folder(path: Path, boxes: _MboxFiles) -> Iterator[Source]:
    if is_maildir(path):
        yield from _maildir(path)
        return
    for root, dirs, files in os.walk(path):
        here = Path(root)
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for child in [d for d in dirs if is_maildir(here / d)]:
            dirs.remove(child)
            yield from _maildir(here / child)
        for file in sorted(f for f in files if not f.startswith(".")):
            yield from _file(here / file, str(here / file), boxes)


def _file(path: Path, name: str, boxes: _MboxFiles) -> Iterator[Source]:
    if is_mbox(path):
        for number, key in enumerate(boxes.keys(path), 1):
            yield Source(f"{name}#{number}", boxes.reader(path, key))
        return
    yield Source(name, path.read_bytes)


def _maildir(path: Path) -> Iterator[Source]:
    box = mailbox.Maildir(path, factory=None, create=False)
    for key in sorted(box.keys()):
        yield Source(f"{path}:{key}", _reader(box, key))


def _reader(box: mailbox.Mailbox, key: str) -> Callable[[], bytes]:
    return lambda: box.get_bytes(key)


class _MboxFiles:
    """Opens an mbox file when one of its messages is read, and keeps only that one open.

    Keeping every mbox of a large folder open runs out of file descriptors (EMFILE), and the
    files after that were then judged as unreadable single messages.
    """

    def __init__(self) -> None:
        self._path: Path | None = None
        self._box: mailbox.mbox | None = None

    @staticmethod
    def keys(path: Path) -> list[str]:
        box = mailbox.mbox(path, create=False)
        try:
            return box.keys()
        finally:
            box.close()

    def reader(self, path: Path, key: str) -> Callable[[], bytes]:
        return lambda: self._open(path).get_bytes(key)

    def _open(self, path: Path) -> mailbox.mbox:
        if self._path != path:
            if self._box is not None:
                self._box.close()
            self._box, self._path = mailbox.mbox(path, create=False), path
        return self._box
