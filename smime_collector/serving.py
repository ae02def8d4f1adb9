"""gunicorn's own settings, read from the environment and validated with one line each.

``gunicorn.conf.py`` applies them; keeping the reading here lets it be tested and lets a
``WEB_CONCURRENCY=four`` or a ``TLS_CERT`` without ``TLS_KEY`` stop start-up with a sentence
instead of a traceback, and so does a ``GUNICORN_WORKER_CLASS`` gunicorn cannot load.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from smime_collector.config import ConfigError

DEFAULT_BIND = "127.0.0.1:8855"
#: Below SparkPost's webhook timeout, so a stuck request fails here first and the relay retries.
DEFAULT_TIMEOUT = 25
#: Seconds a request's deadline keeps back from the worker timeout for what follows the last
#: wait: finishing the message under way (each is bounded well below this), answering, logging.
ANSWER_MARGIN_SECONDS = 5.0


@dataclass(frozen=True)
class ServerOptions:
    bind: str
    workers: int
    worker_class: str
    threads: int
    timeout: int
    accesslog: str
    errorlog: str
    certfile: str | None
    keyfile: str | None


def _count(environ: Mapping[str, str], name: str, default: int) -> int:
    raw = environ.get(name, "").strip()
    if not raw:
        return default
    if not raw.isdigit() or int(raw) < 1:
        raise ConfigError(f"{name} must be a whole number of at least 1, not {raw!r}")
    return int(raw)


def _worker_class(environ: Mapping[str, str]) -> str:
    """``GUNICORN_WORKER_CLASS``, loaded here the way gunicorn will load it, so that a name it
    does not know is one line now rather than gunicorn's ImportError traceback later."""
    from gunicorn.util import load_class
    from gunicorn.workers import SUPPORTED_WORKERS
    from gunicorn.workers.base import Worker

    raw = environ.get("GUNICORN_WORKER_CLASS", "").strip() or "sync"
    wanted = f"one of gunicorn's workers ({', '.join(SUPPORTED_WORKERS)}) or a module.Class path"
    if "." not in raw and raw not in SUPPORTED_WORKERS:
        raise ConfigError(f"GUNICORN_WORKER_CLASS must be {wanted}, not {raw!r}")
    try:
        found = load_class(raw)
    except Exception as exc:  # noqa: BLE001 - importing a module can fail in any way
        # gunicorn wraps the import's own error, traceback and all, in a RuntimeError.
        cause = exc.__context__ if isinstance(exc, RuntimeError) and exc.__context__ else exc
        why = " ".join(str(cause).split())
        raise ConfigError(f"GUNICORN_WORKER_CLASS {raw!r} cannot be loaded ({why})") from None
    if not (isinstance(found, type) and issubclass(found, Worker)):
        raise ConfigError(f"GUNICORN_WORKER_CLASS {raw!r} is not a gunicorn worker class")
    return raw


def server_options(environ: Mapping[str, str]) -> ServerOptions:
    """The options from ``environ``; :class:`ConfigError` names the variable that is wrong."""
    cert = environ.get("TLS_CERT", "").strip() or None
    key = environ.get("TLS_KEY", "").strip() or None
    if (cert is None) != (key is None):
        given, missing = ("TLS_CERT", "TLS_KEY") if cert else ("TLS_KEY", "TLS_CERT")
        raise ConfigError(f"{given} is set but {missing} is not: HTTPS needs both")
    for name, value in (("TLS_CERT", cert), ("TLS_KEY", key)):
        if value is not None and not Path(value).is_file():
            raise ConfigError(f"{name}: {value} is not a readable file")
    return ServerOptions(
        bind=environ.get("BIND", DEFAULT_BIND),
        workers=_count(environ, "WEB_CONCURRENCY", 2),
        worker_class=_worker_class(environ),
        threads=_count(environ, "GUNICORN_THREADS", 1),
        timeout=_count(environ, "GUNICORN_TIMEOUT", DEFAULT_TIMEOUT),
        accesslog=environ.get("ACCESS_LOG", "gunicorn-access.log"),
        errorlog=environ.get("ERROR_LOG", "-"),
        certfile=cert,
        keyfile=key,
    )


def request_budget(environ: Mapping[str, str]) -> float:
    """Seconds a relay request may spend so that it is answered before gunicorn kills the
    worker: ``GUNICORN_TIMEOUT`` less :data:`ANSWER_MARGIN_SECONDS` (half of a short one)."""
    try:
        timeout = float(_count(environ, "GUNICORN_TIMEOUT", DEFAULT_TIMEOUT))
    except ConfigError:
        timeout = DEFAULT_TIMEOUT  # refused at start-up by gunicorn's settings; never here
    return max(timeout - ANSWER_MARGIN_SECONDS, timeout / 2)
