"""Log handlers for entry points; library modules only ever call ``logging.getLogger(__name__)``.

Everything the service logs goes through loggers under ``smime_collector``. An entry point (the
web app, the CLI, the SMTP server) calls :func:`attach` once, which puts one handler on that
logger for the configured ``log-file`` and ``log-format``, and then wraps each unit of work
(a request, a file, an SMTP transaction) in :func:`context`, which gives every line of it the
same request id and routes it to that entry point's handler only: two apps in one process (tests
build many) never write into each other's files. The database driver's own warnings
(:data:`FOREIGN_LOGGERS`) take the same route, so they land in the same log.

The text format is the seed's, with the request id as a field of its own:
``%(asctime)s,%(entry)s,%(levelname)s,%(request_id)s,%(message)s``.

Files are opened with a :class:`logging.handlers.WatchedFileHandler` and never rotated by the
service: with several gunicorn workers, each rotating by itself deleted the others' day
(``TimedRotatingFileHandler`` removes an existing target). logrotate renames the file, and every
worker reopens the new one at the next unit of work it logs (``contrib/logrotate.conf``).
``log-file = -`` logs to standard error for journald instead.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import re
import secrets
import sys
import time
import weakref
from collections.abc import Iterator
from dataclasses import dataclass
from logging.handlers import WatchedFileHandler
from pathlib import Path

from smime_collector.config import ConfigError

ROOT = "smime_collector"
#: Other libraries' loggers whose records go through the entry point's sink as well, with the
#: least severe level kept from each. psycopg's pool says why it cannot connect (the cause of a
#: database outage) at WARNING, from threads of its own, and logs every connection it lends at
#: INFO, which would be two lines per message.
FOREIGN_LOGGERS = {"psycopg": logging.WARNING}
TEXT_FORMAT = "%(asctime)s,%(entry)s,%(levelname)s,%(request_id)s,%(message)s"
NO_REQUEST = "-"
_CONTROL = re.compile(r"[\x00-\x1f\x7f\u2028\u2029\x85]")
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")


@dataclass(frozen=True)
class _Scope:
    sink: int
    request_id: str


_scope: contextvars.ContextVar[_Scope | None] = contextvars.ContextVar("log_scope", default=None)


def new_request_id() -> str:
    return secrets.token_hex(6)


def request_id_from(value: str | None) -> str:
    """A caller-supplied id (``X-Request-Id``) when it is safe to log as is, else a new one."""
    if value and _REQUEST_ID.match(value):
        return value
    return new_request_id()


def current_request_id() -> str:
    scope = _scope.get()
    return scope.request_id if scope else NO_REQUEST


class _Dispatch(logging.Handler):
    """The one handler on the ``smime_collector`` logger: sends each record to the sink of the
    unit of work it was logged in, or to every live sink when it was logged outside any."""

    def __init__(self) -> None:
        super().__init__()
        self.sinks: weakref.WeakValueDictionary[int, LogSink] = weakref.WeakValueDictionary()

    def handle(self, record: logging.LogRecord) -> bool:
        scope = _scope.get()
        if scope is None:
            targets = list(self.sinks.values())
            rid = NO_REQUEST
        else:
            sink = self.sinks.get(scope.sink)
            targets = [] if sink is None else [sink]
            rid = scope.request_id
        for sink in targets:
            record.entry = sink.entry
            record.request_id = rid
            sink.handler.handle(record)
        return bool(targets)

    def emit(self, record: logging.LogRecord) -> None:  # pragma: no cover - handle() routes
        raise NotImplementedError


_dispatch = _Dispatch()


class _SecondsFormatter(logging.Formatter):
    """``formatTime`` with the date and time formatted once per second, not once per line:
    every message logs about twenty lines, and ``strftime`` was a tenth of each line's cost."""

    _cached: tuple[int, str] = (-1, "")

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        if datefmt is not None or self.datefmt is not None:
            return super().formatTime(record, datefmt)
        second = int(record.created)
        cached_second, stamp = self._cached  # one tuple: threads never see half an update
        if second != cached_second:
            stamp = time.strftime(self.default_time_format, self.converter(second))
            self._cached = (second, stamp)
        if self.default_msec_format:
            return self.default_msec_format % (stamp, record.msecs)
        return stamp


class OneLineFormatter(_SecondsFormatter):
    """Every record is one line: control characters in a message (a folded header, a relay
    field, a certificate name) are escaped, so input can never forge a log line. Tracebacks,
    appended after the message, keep their line breaks."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        record.message = one_line(record.message)
        return super().formatMessage(record)


class JSONFormatter(_SecondsFormatter):
    """One JSON object per line; the verdict line also carries its fields (``extra=``)."""

    FIELDS = ("outcome", "reason", "email", "message_id", "intake", "location")

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": self.formatTime(record),
            "entry": getattr(record, "entry", ""),
            "level": record.levelname,
            "logger": record.name,
            "request_id": getattr(record, "request_id", NO_REQUEST),
            "message": record.getMessage(),
        }
        for name in self.FIELDS:
            if hasattr(record, name):
                entry[name] = getattr(record, name)
        if record.exc_info:
            entry["traceback"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False, default=str)


class ReopeningFileHandler(WatchedFileHandler):
    """:class:`WatchedFileHandler` that looks for a renamed or deleted file at the first line of
    each unit of work (a request, a file, an SMTP transaction) instead of at every line: the
    ``stat`` per line was a fifth of a line's cost, at about twenty lines per message. After
    logrotate renames the file, the unit of work under way finishes in the renamed file (kept
    uncompressed until the next rotation: ``delaycompress``), and the next one opens the new
    file, so still no line is lost. Lines outside any unit of work check every time."""

    _checked: _Scope | None = None

    def emit(self, record: logging.LogRecord) -> None:
        scope = _scope.get()
        if scope is None or scope is not self._checked:
            self.reopenIfNeeded()
            self._checked = scope
        logging.FileHandler.emit(self, record)


def one_line(message: str) -> str:
    return _CONTROL.sub(_escape, message)


def _escape(match: re.Match[str]) -> str:
    return match.group().encode("unicode_escape").decode("ascii")


class LogSink:
    """One entry point's handler; :meth:`context` scopes a unit of work to it. The handler is
    closed when the sink is no longer referenced (tests build hundreds of apps)."""

    def __init__(self, handler: logging.Handler, entry: str) -> None:
        self.handler = handler
        self.entry = entry
        self._finalizer = weakref.finalize(self, handler.close)

    @contextlib.contextmanager
    def context(self, request_id: str | None = None) -> Iterator[str]:
        """Lines logged inside go to this sink only, with ``request_id`` (new when ``None``)."""
        rid = request_id or new_request_id()
        token = _scope.set(_Scope(id(self), rid))
        try:
            yield rid
        finally:
            _scope.reset(token)

    def close(self) -> None:
        _dispatch.sinks.pop(id(self), None)
        self._finalizer()


def touch_log_file(log_file: Path) -> None:
    """Create ``log_file`` (and its folder) if needed and check it can be appended to;
    :class:`OSError` says why not."""
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with log_file.open("a", encoding="utf-8"):
        pass


def open_log_file(log_file: Path) -> Path:
    """:func:`touch_log_file`, so that a log that cannot be written stops start-up with one
    line naming ``log-file`` instead of a traceback in every gunicorn worker."""
    try:
        touch_log_file(log_file)
    except OSError as exc:
        raise ConfigError(f"log-file: cannot write {log_file}: {exc.strerror or exc}") from None
    return log_file


def adopt_foreign_loggers() -> None:
    """Give :data:`FOREIGN_LOGGERS` the one dispatching handler, so their records reach the
    live sinks (outside a unit of work: every one) and nothing else. Without it they found no
    handler and Python's last resort printed them on standard error, outside the log; not
    propagating keeps them from being written twice should anything handle the root logger."""
    for name, level in FOREIGN_LOGGERS.items():
        logger = logging.getLogger(name)
        if _dispatch not in logger.handlers:
            logger.addHandler(_dispatch)
        logger.propagate = False
        logger.setLevel(level)


def attach(entry: str, log_file: Path | None, level: str = "INFO", fmt: str = "text") -> LogSink:
    """A sink for ``entry`` writing to ``log_file`` (``None``: standard error)."""
    if log_file is None:
        handler: logging.Handler = logging.StreamHandler(sys.stderr)
    else:
        handler = ReopeningFileHandler(open_log_file(log_file), encoding="utf-8")
    handler.setFormatter(JSONFormatter() if fmt == "json" else OneLineFormatter(TEXT_FORMAT))
    handler.setLevel(level)
    sink = LogSink(handler, entry)
    _dispatch.sinks[id(sink)] = sink
    root = logging.getLogger(ROOT)
    if _dispatch not in root.handlers:
        root.addHandler(_dispatch)
    root.propagate = False
    adopt_foreign_loggers()
    # The logger lets through what the most verbose live sink wants, and no more: a DEBUG
    # line nobody writes would still cost its formatting.
    root.setLevel(min(s.handler.level for s in _dispatch.sinks.values()))
    return sink
