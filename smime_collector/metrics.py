"""Prometheus metrics, correct under several gunicorn workers (multiprocess mode).

Everything counted here is read off a :class:`Verdict` or an HTTP status; nothing keeps its own
tally. gunicorn's settings set ``PROMETHEUS_MULTIPROC_DIR`` before workers start, which makes
prometheus_client keep values in per-process files that ``/metrics`` adds up. What describes
the process or the store rather than events (build info, certificates stored, earliest expiry)
is read at scrape time instead, so every worker answers the same.

Names follow Prometheus conventions (base units, ``_total`` for counters, ``_duration_seconds``,
an HTTP status in ``code``). The 1.0 names are still exported, as :data:`DEPRECATED` lists, for
one release, so dashboards can move over; CHANGELOG.md says when they go.
"""

from __future__ import annotations

import glob
import logging
import os
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    multiprocess,
)
from prometheus_client.metrics_core import GaugeMetricFamily, Metric

from smime_collector import __version__
from smime_collector.store.base import StoreUnavailable
from smime_collector.verdict import Outcome, Verdict

if TYPE_CHECKING:
    from smime_collector.store.base import StoreStats

log = logging.getLogger(__name__)

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

MESSAGES = Counter(
    "smime_messages_total",
    "Messages judged, by outcome, reason and the intake they came through.",
    ["outcome", "reason", "intake"],
)
REQUEST_DURATION = Histogram(
    "smime_request_duration_seconds",
    "Requests to the mail intakes, by HTTP status code.",
    ["code"],
    buckets=LATENCY_BUCKETS,
)
STAGE_DURATION = Histogram(
    "smime_stage_duration_seconds", "Time per pipeline stage.", ["stage"], buckets=LATENCY_BUCKETS
)
CERTIFICATE_WRITES = Counter(
    "smime_certificate_writes_total", "Certificates written to the store (new or replacing)."
)
WORKER_TIMEOUTS = Counter(
    "smime_worker_timeouts_total",
    "Requests that never got an answer because gunicorn's worker timeout killed the worker.",
)
DNS_LOOKUPS = Counter("smime_dkim_dns_lookups_total", "DKIM key lookups sent to DNS.")
DNS_CACHE_HITS = Counter("smime_dkim_dns_cache_hits_total", "DKIM keys served from the cache.")
REVOCATION_UNKNOWN = Counter(
    "smime_revocation_unknown_total",
    "Certificates stored with revocation = soft although their status was not established.",
)

# -- the 1.0 names, deprecated: exported alongside the new ones for one release ---------------
REQUESTS = Counter(
    "smime_requests_total",
    "DEPRECATED (use smime_request_duration_seconds_count): intake requests by status.",
    ["status"],
)
REQUEST_SECONDS = Histogram(
    "smime_request_seconds",
    "DEPRECATED (use smime_request_duration_seconds): intake request latency.",
    buckets=LATENCY_BUCKETS,
)
STAGE_SECONDS = Histogram(
    "smime_stage_seconds",
    "DEPRECATED (use smime_stage_duration_seconds): time per pipeline stage.",
    ["stage"],
    buckets=LATENCY_BUCKETS,
)
STORED = Counter(
    "smime_certificates_stored_total",
    "DEPRECATED (use smime_certificate_writes_total): certificates written.",
)

#: Deprecated name → the name that replaces it (CHANGELOG.md and the README list the same).
DEPRECATED: dict[str, str] = {
    "smime_requests_total": "smime_request_duration_seconds_count",
    "smime_request_seconds": "smime_request_duration_seconds",
    "smime_stage_seconds": "smime_stage_duration_seconds",
    "smime_certificates_stored_total": "smime_certificate_writes_total",
}


@dataclass(frozen=True)
class _InFlight:
    started: float
    intake: bool


#: Requests this process is serving now, by thread: what a worker timeout would cut short.
_in_flight: dict[int, _InFlight] = {}
#: What gunicorn answers a request whose worker it killed (when it still can).
TIMEOUT_STATUS = 500


def request_started(intake: bool) -> None:
    _in_flight[threading.get_ident()] = _InFlight(time.perf_counter(), intake)


def request_finished(code: int) -> None:
    """One answered request; only those to a mail intake are observed."""
    request = _in_flight.pop(threading.get_ident(), None)
    if request is not None and request.intake:
        _observe(code, time.perf_counter() - request.started)


def _observe(code: int, seconds: float) -> None:
    """Under the new names and the deprecated ones."""
    REQUEST_DURATION.labels(str(code)).observe(seconds)
    REQUEST_SECONDS.observe(seconds)
    REQUESTS.labels(str(code)).inc()


def request_timed_out() -> None:
    """gunicorn's ``worker_abort`` hook: this worker is being killed by the timeout. Each
    request it was serving is counted, and an intake request is observed with the 500 gunicorn
    answers, so the histogram misses none of them."""
    now = time.perf_counter()
    for request in list(_in_flight.values()):
        WORKER_TIMEOUTS.inc()
        if request.intake:
            _observe(TIMEOUT_STATUS, now - request.started)
    _in_flight.clear()


def record_verdict(verdict: Verdict, intake: str) -> None:
    MESSAGES.labels(verdict.outcome.value, str(verdict.reason), intake).inc()
    if verdict.outcome is Outcome.STORED:
        CERTIFICATE_WRITES.inc()
        STORED.inc()


def stage(name: str) -> StageTimer:
    """``with stage("dkim"):`` observes the block's duration in :data:`STAGE_DURATION` (and
    its deprecated alias :data:`STAGE_SECONDS`)."""
    return StageTimer(name)


class StageTimer:
    """A context manager as a class, and each stage's labelled children looked up once: five
    stages per message made the generator-based one and ``labels()`` cost ~10 µs."""

    __slots__ = ("children", "start")
    _children: dict[str, tuple[Any, Any]] = {}

    def __init__(self, name: str) -> None:
        children = self._children.get(name)
        if children is None:
            children = (STAGE_DURATION.labels(name), STAGE_SECONDS.labels(name))
            self._children[name] = children
        self.children = children
        self.start = 0.0

    def __enter__(self) -> None:
        self.start = time.perf_counter()

    def __exit__(self, *exc: object) -> None:
        elapsed = time.perf_counter() - self.start
        for child in self.children:
            child.observe(elapsed)


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


class ScrapeTime:
    """Values read when scraped: the build, and the store's count and earliest expiry (from
    its index, so a scrape parses no certificate)."""

    def __init__(self, store: StoreLike | None) -> None:
        self.store = store

    def collect(self) -> Iterable[Metric]:
        info = GaugeMetricFamily(
            "smime_build_info", "The running release (always 1).", labels=["version"]
        )
        info.add_metric([__version__], 1)
        yield info
        if self.store is None:
            return
        try:
            stats = self.store.stats()
        except StoreUnavailable as exc:
            # An outage is when the request counters (503s) matter most: leave out only what
            # the store cannot tell now, never the whole scrape.
            log.warning("metrics: store gauges left out, the store is unavailable: %s", exc)
            return
        yield GaugeMetricFamily(
            "smime_certificates_stored", "Certificates stored now.", value=stats.count
        )
        if stats.earliest_expiry is not None:
            yield GaugeMetricFamily(
                "smime_certificate_earliest_expiry_timestamp_seconds",
                "The earliest notAfter of the stored certificates (expired ones included), "
                "as Unix time.",
                value=stats.earliest_expiry.timestamp(),
            )


class StoreLike(Protocol):
    def stats(self) -> StoreStats: ...


def exposition(store: StoreLike | None = None) -> tuple[bytes, str]:
    """The text format, summed over all worker processes when in multiprocess mode, with the
    scrape-time values of ``store``."""
    path = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    registry = CollectorRegistry()
    # Outside gunicorn (tests, the CLI) this process's own registry is the source; having no
    # describe(), it is registered without a duplicate-name check, as any plain collector is.
    registry.register(WorkerFiles(path) if path else REGISTRY)
    registry.register(ScrapeTime(store))
    return generate_latest(registry), CONTENT_TYPE_LATEST


def worker_exited(pid: int) -> None:
    """gunicorn's child_exit hook: forget a dead worker's live-only values."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        multiprocess.mark_process_dead(pid)
