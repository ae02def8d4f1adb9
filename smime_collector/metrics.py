"""Prometheus metrics, correct under several gunicorn workers (multiprocess mode).

Everything counted here is read off a :class:`Verdict` or an HTTP status; nothing keeps its own
tally. gunicorn.conf.py sets ``PROMETHEUS_MULTIPROC_DIR`` before workers start, which makes
prometheus_client keep values in per-process files that ``/metrics`` adds up.
"""

from __future__ import annotations

import glob
import os
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    multiprocess,
)
from prometheus_client.metrics_core import Metric

from smime_collector.verdict import Outcome, Verdict

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

MESSAGES = Counter(
    "smime_messages_total",
    "Messages judged, by outcome, reason and the intake they came through.",
    ["outcome", "reason", "intake"],
)
REQUESTS = Counter("smime_requests_total", "Relay webhook requests, by HTTP status.", ["status"])
REQUEST_SECONDS = Histogram(
    "smime_request_seconds", "Relay webhook request latency.", buckets=LATENCY_BUCKETS
)
STAGE_SECONDS = Histogram(
    "smime_stage_seconds", "Time per pipeline stage.", ["stage"], buckets=LATENCY_BUCKETS
)
DNS_LOOKUPS = Counter("smime_dkim_dns_lookups_total", "DKIM key lookups sent to DNS.")
DNS_CACHE_HITS = Counter("smime_dkim_dns_cache_hits_total", "DKIM keys served from the cache.")
STORED = Counter("smime_certificates_stored_total", "Certificates written to the folder.")
REVOCATION_UNKNOWN = Counter(
    "smime_revocation_unknown_total",
    "Certificates stored with revocation = soft although their status was not established.",
)


def record_verdict(verdict: Verdict, intake: str) -> None:
    MESSAGES.labels(verdict.outcome.value, str(verdict.reason), intake).inc()
    if verdict.outcome is Outcome.STORED:
        STORED.inc()


@contextmanager
def stage(name: str) -> Iterator[None]:
    start = time.perf_counter()
    try:
        yield
    finally:
        STAGE_SECONDS.labels(name).observe(time.perf_counter() - start)


class WorkerFiles:
    """``MultiProcessCollector`` over the per-process files, leaving out empty ones.

    prometheus_client creates a process's file before sizing it, so for a moment (for good, if
    the process dies in that moment) it is empty, and reading it raises ``struct.error`` and
    fails the whole scrape (prometheus/client_python#1199). An empty file holds no values, so
    leaving it out changes no sum.
    """

    def __init__(self, path: str) -> None:
        self.path = path

    def collect(self) -> Iterable[Metric]:
        files = []
        for name in glob.glob(os.path.join(self.path, "*.db")):
            try:
                if os.path.getsize(name) > 0:
                    files.append(name)
            except OSError:
                continue
        return multiprocess.MultiProcessCollector.merge(files, accumulate=True)


def exposition() -> tuple[bytes, str]:
    """The text format, summed over all worker processes when in multiprocess mode."""
    path = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if path:
        registry = CollectorRegistry()
        registry.register(WorkerFiles(path))
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST


def worker_exited(pid: int) -> None:
    """gunicorn's child_exit hook: forget a dead worker's live-only values."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        multiprocess.mark_process_dead(pid)
