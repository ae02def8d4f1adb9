"""The seed's log format, with exactly one file handler per logger and process."""

from __future__ import annotations

import logging
from logging.handlers import TimedRotatingFileHandler
from pathlib import Path

LOG_FORMAT = "%(asctime)s,%(name)s,%(levelname)s,%(message)s"


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
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    logger.addHandler(handler)
    logger.setLevel(level)
    logger.propagate = False
    return logger
