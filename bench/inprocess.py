"""In-process throughput: ``Collector.read_smime_email`` over the corpus on one core.

A pass judges every corpus message once, in one thread. The first passes go to a fresh
certificate folder (every verdict ``stored``), later ones to the filled folder (``unchanged``).
Stage times are the differences of ``smime_stage_duration_seconds_sum``
(metrics.STAGE_DURATION) around each pass; "other" is what the stages do not cover (finding
the signature, logging, verdict).
Each figure is the best of ``repeats`` passes, after one warm-up pass (imports, DNS cache).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from prometheus_client import REGISTRY

from bench import BenchError, floor
from bench.corpus import BenchMessage
from bench.workspace import Workspace, with_store
from smime_collector.pipeline import Collector
from smime_collector.verdict import Outcome

STAGES = ("parse", "dkim", "cms", "chain", "store")


@dataclass(frozen=True)
class PassResult:
    messages: int
    seconds: float  # wall time
    stages: dict[str, float]
    cpu_seconds: float  # CPU time of this process during the pass

    @property
    def per_message(self) -> float:
        return self.seconds / self.messages

    @property
    def rate(self) -> float:
        return self.messages / self.seconds

    @property
    def cpu_per_message(self) -> float:
        return self.cpu_seconds / self.messages

    @property
    def cpu_rate(self) -> float:
        """Messages per CPU second: the rate an idle core would give, if nothing waits."""
        return self.messages / self.cpu_seconds if self.cpu_seconds else float("nan")

    def stage_per_message(self) -> dict[str, float]:
        """Seconds per message in each stage, plus ``other`` for the rest."""
        out = {name: self.stages[name] / self.messages for name in STAGES}
        out["other"] = max(0.0, self.per_message - sum(out.values()))
        return out


@dataclass(frozen=True)
class InProcessResult:
    stored: PassResult
    unchanged: PassResult
    floor: floor.FloorResult


def stage_sums() -> dict[str, float]:
    return {
        name: REGISTRY.get_sample_value("smime_stage_duration_seconds_sum", {"stage": name}) or 0.0
        for name in STAGES
    }


def run_pass(collector: Collector, messages: Sequence[BenchMessage], expect: Outcome) -> PassResult:
    """Judge every message once; raise :class:`BenchError` unless all end in ``expect``."""
    outcomes: Counter[str] = Counter()
    first_other = ""
    received = datetime.now(UTC)
    before = stage_sums()
    cpu = time.process_time()
    start = time.perf_counter()
    for message in messages:
        verdict = collector.read_smime_email(message.raw, received)
        outcomes[verdict.outcome.value] += 1
        if verdict.outcome is not expect and not first_other:
            first_other = f"{message.address}: {verdict.outcome.value} {verdict.reason}"
    seconds = time.perf_counter() - start
    cpu = time.process_time() - cpu
    after = stage_sums()
    if first_other:
        raise BenchError(
            f"expected every verdict {expect.value}, got {dict(outcomes)}: {first_other}"
        )
    return PassResult(len(messages), seconds, {k: after[k] - before[k] for k in STAGES}, cpu)


def best(results: Sequence[PassResult]) -> PassResult:
    """The fastest pass by wall time."""
    return min(results, key=lambda r: r.seconds)


def least_cpu(results: Sequence[PassResult]) -> PassResult:
    """The pass that used the least CPU time (the least disturbed by other work)."""
    return min(results, key=lambda r: r.cpu_seconds)


def stored_then_unchanged(
    collector: Collector, messages: Sequence[BenchMessage], folder: Path, repeats: int
) -> tuple[PassResult, PassResult]:
    """Best ``stored`` pass (a fresh folder each) and best ``unchanged`` pass after them."""
    stored = []
    target = collector
    for i in range(max(1, repeats)):
        target = with_store(collector, folder / f"stored-{i}")
        stored.append(run_pass(target, messages, Outcome.STORED))
    unchanged = [run_pass(target, messages, Outcome.UNCHANGED) for _ in range(max(1, repeats))]
    return best(stored), best(unchanged)


def measure(ws: Workspace, repeats: int) -> InProcessResult:
    settings = ws.settings("inprocess", roots=150)
    collector = ws.collector(settings)
    messages = ws.corpus.messages
    run_pass(with_store(collector, ws.folder / "inprocess" / "warm-up"), messages, Outcome.STORED)
    stored, unchanged = stored_then_unchanged(collector, messages, ws.folder / "inprocess", repeats)
    items = floor.prepare(ws.corpus)
    return InProcessResult(stored, unchanged, floor.measure(items, repeats + 2))
