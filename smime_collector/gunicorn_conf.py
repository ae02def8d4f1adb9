"""gunicorn settings for smime-collector (``gunicorn -c python:smime_collector.gunicorn_conf``).

The seed's options, read from the environment so one file serves every deployment:
``BIND`` (default 127.0.0.1:8855), ``WEB_CONCURRENCY`` workers (default 2), ``TLS_CERT`` and
``TLS_KEY`` for HTTPS, ``ACCESS_LOG`` (default gunicorn-access.log, ``-`` for stdout),
``GUNICORN_TIMEOUT``. Both the environment and the configuration are validated here, in the
master, so a bad setting stops start-up with one line instead of workers failing one after
another. The module is part of the package so an installed service has it; the checkout's
``gunicorn.conf.py`` re-exports it.
"""

import os
import shutil
import sys
import tempfile

# Metrics from every worker are summed through files in this folder (prometheus_client's
# multiprocess mode). It must be set before any worker imports prometheus_client, and be empty
# at start, so each master gets a fresh one unless the operator names one.
_own_metrics_dir = "PROMETHEUS_MULTIPROC_DIR" not in os.environ
if _own_metrics_dir:
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="smime-collector-metrics-")

from smime_collector.config import ConfigError, load_settings  # noqa: E402
from smime_collector.logsetup import open_log_file  # noqa: E402
from smime_collector.serving import server_options  # noqa: E402
from smime_collector.store import StoreUnavailable, open_store  # noqa: E402
from smime_collector.trust import TrustError, load_anchors  # noqa: E402
from smime_collector.ui import ratelimit  # noqa: E402

__all__ = [
    "accesslog",
    "bind",
    "certfile",
    "child_exit",
    "errorlog",
    "graceful_timeout",
    "keepalive",
    "keyfile",
    "limit_request_line",
    "on_exit",
    "threads",
    "timeout",
    "worker_abort",
    "worker_class",
    "workers",
]


def _stop(message: str) -> None:
    print(f"smime-collector: configuration error: {message}", file=sys.stderr)
    if _own_metrics_dir:
        shutil.rmtree(os.environ["PROMETHEUS_MULTIPROC_DIR"], ignore_errors=True)
    sys.exit(2)


try:
    _options = server_options(os.environ)
    _settings = load_settings()
    if _settings.log_file is not None:
        open_log_file(_settings.log_file)  # each worker opens it; a bad one stops the master
    load_anchors(list(_settings.trusted_certs))
    # Creates the folder, or creates and migrates the database schema (under an advisory lock,
    # so hosts starting together do not race), then checks the store can be written. Nothing
    # stays open: each worker opens its own connections after the fork.
    _opened = open_store(_settings)
    try:
        _opened.prepare()
        _store = _opened.health()
    finally:
        _opened.close()
    if not _store.ok:
        _stop(_store.detail)
except (ConfigError, TrustError, OSError, StoreUnavailable) as exc:
    _stop(str(exc))

bind = _options.bind
workers = _options.workers
worker_class = _options.worker_class
threads = _options.threads
timeout = _options.timeout
graceful_timeout = 20
keepalive = 5
accesslog = _options.accesslog
errorlog = _options.errorlog
certfile = _options.certfile
keyfile = _options.keyfile
limit_request_line = 8190

# Sign-in attempts at /ui are counted in memory every worker shares: made here, in the master,
# before the workers are forked from it.
ratelimit.share_between_workers()


def child_exit(server, worker):
    from smime_collector.metrics import worker_exited

    worker_exited(worker.pid)


def worker_abort(worker):
    """gunicorn's worker timeout: the worker is about to die in the middle of a request, which
    no response, log line or histogram will ever show, so count it here."""
    from smime_collector.metrics import request_timed_out

    request_timed_out()


def on_exit(server):
    if _own_metrics_dir:
        shutil.rmtree(os.environ["PROMETHEUS_MULTIPROC_DIR"], ignore_errors=True)
