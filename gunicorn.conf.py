"""gunicorn settings for smime-collector (``gunicorn -c gunicorn.conf.py webapp:app``).

The seed's options, read from the environment so one file serves every deployment:
``BIND`` (default 127.0.0.1:8855), ``WEB_CONCURRENCY`` workers (default 2), ``TLS_CERT`` and
``TLS_KEY`` for HTTPS without a reverse proxy, ``ACCESS_LOG`` (default gunicorn-access.log,
``-`` for stdout). The configuration is validated here, in the master, so a bad ``webapp.ini``
stops start-up with one line instead of workers failing one after another.
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
from smime_collector.trust import TrustError, load_anchors  # noqa: E402

bind = os.environ.get("BIND", "127.0.0.1:8855")
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
worker_class = os.environ.get("GUNICORN_WORKER_CLASS", "sync")
threads = int(os.environ.get("GUNICORN_THREADS", "1"))
# Below SparkPost's webhook timeout, so a stuck request fails here first and the relay retries.
timeout = int(os.environ.get("GUNICORN_TIMEOUT", "25"))
graceful_timeout = 20
keepalive = 5
accesslog = os.environ.get("ACCESS_LOG", "gunicorn-access.log")
errorlog = os.environ.get("ERROR_LOG", "-")
certfile = os.environ.get("TLS_CERT") or None
keyfile = os.environ.get("TLS_KEY") or None
limit_request_line = 8190


def child_exit(server, worker):
    from smime_collector.metrics import worker_exited

    worker_exited(worker.pid)


def on_exit(server):
    if _own_metrics_dir:
        shutil.rmtree(os.environ["PROMETHEUS_MULTIPROC_DIR"], ignore_errors=True)


try:
    _settings = load_settings()
    load_anchors(list(_settings.trusted_certs))
    _settings.user_certs_dir.mkdir(parents=True, exist_ok=True)
except (ConfigError, TrustError, OSError) as exc:
    print(f"smime-collector: configuration error: {exc}", file=sys.stderr)
    if _own_metrics_dir:
        shutil.rmtree(os.environ["PROMETHEUS_MULTIPROC_DIR"], ignore_errors=True)
    sys.exit(2)
