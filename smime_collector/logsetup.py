"""The seed's log format, with exactly one file handler per logger and process."""

from __future__ import annotations

import logging
import re
from logging.handlers import TimedRotatingFileHandler
from pathlib import Path

LOG_FORMAT = "%(asctime)s,%(name)s,%(levelname)s,%(message)s"
_CONTROL = re.compile(r"[\x00-\x1f\x7f\u2028\u2029\x85]")


class OneLineFormatter(logging.Formatter):
    """Every record is one line: control characters in a message (a folded header, a relay
    field, a certificate name) are escaped, so input can never forge a log line. Tracebacks,
    appended after the message, keep their line breaks."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        record.message = _CONTROL.sub(_escape, record.message)
        return super().formatMessage(record)


def _escape(match: re.Match[str]) -> str:
    return match.group().encode("unicode_escape").decode("ascii")


def get_logger(name: str, log_file: Path, level: str = "INFO") -> logging.Logger:
    """Return ``name``'s logger writing to ``log_file``; calling again never adds a duplicate."""
    logger = logging.getLogger(name)
    target = str(log_file.resolve())
    for handler in list(logger.handlers):
        if getattr(handler, "baseFilename", None) == target:
            logger.setLevel(level)
            return logger
        logger.removeHandler(handler)
        handler.close()
    log_file.parent.mkdir(parents=True, exist_ok=True)
    handler = TimedRotatingFileHandler(target, when="midnight", backupCount=10, encoding="utf-8")
    handler.setFormatter(OneLineFormatter(LOG_FORMAT))
    logger.addHandler(handler)
    logger.setLevel(level)
    logger.propagate = False
    return logger
