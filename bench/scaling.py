"""Cost per message against batch size (HTTP), trust bundle size and store size (in-process).

- Batch size: relay batches of 1, 10 and 100 messages posted to the running gunicorn by the
  same number of clients; cost per message is wall time ÷ messages judged.
- Trust bundle: the same corpus judged (``unchanged``) by collectors whose bundle holds 150 or
  1,500 roots (the shipped bundle, the bench root, self-signed filler roots).
- Store size: the corpus judged ``stored`` then ``unchanged`` into certificate folders already
  holding 1,000 or 100,000 other certificate files (hard links to one PEM, else copies).

The in-process comparisons alternate between the sizes pass by pass, and the caller compares
the passes that used the least CPU time, so that other work on the machine does not decide.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from bench.corpus import BenchMessage
from bench.http_load import LoadResult, batch_bodies, run_load
from bench.inprocess import PassResult, run_pass
from bench.workspace import Workspace, with_store
from smime_collector.pipeline import Collector
from smime_collector.verdict import Outcome


@dataclass(frozen=True)
class LoadPlan:
    concurrency: int
    max_requests: int
    max_seconds: float


def batch_sizes(
    url: str, messages: Sequence[BenchMessage], plans: dict[int, LoadPlan], pids: Sequence[int]
) -> dict[int, LoadResult]:
    """One bounded load per batch size; the corpus is already stored (verdicts unchanged)."""
    results = {}
    for batch, plan in plans.items():
        distinct = max(1, min(len(messages) // batch, 50))
        bodies = batch_bodies(messages, batch, distinct)
        results[batch] = run_load(
            url,
            bodies,
            batch=batch,
            concurrency=plan.concurrency,
            max_requests=plan.max_requests,
            max_seconds=plan.max_seconds,
            server_pids=pids,
        )
    return results


def trust_sizes(ws: Workspace, sizes: Sequence[int], repeats: int) -> dict[int, list[PassResult]]:
    """``unchanged`` passes per bundle size, interleaved so that other work hits all alike."""
    messages = ws.corpus.messages
    collectors = {n: ws.collector(ws.settings(f"trust-{n}", roots=n)) for n in sizes}
    for collector in collectors.values():
        run_pass(collector, messages, Outcome.STORED)  # warm-up: DNS cache, files in place
    results: dict[int, list[PassResult]] = {n: [] for n in sizes}
    for _ in range(max(1, repeats)):
        for n, collector in collectors.items():
            results[n].append(run_pass(collector, messages, Outcome.UNCHANGED))
    return results


def fill_store(folder: Path, count: int, pem: bytes) -> None:
    """``count`` certificate files named like real ones, all the same PEM (hard-linked)."""
    folder.mkdir(parents=True, exist_ok=True)
    template = folder.parent / "template.crt"
    template.write_bytes(pem)
    link = True
    for i in range(count):
        target = folder / f"filler{i:06d}@bulk.bench.example.crt"
        if link:
            try:
                os.link(template, target)
                continue
            except OSError:
                link = False  # file system without hard links, or link count limit: copy
        target.write_bytes(pem)


@dataclass
class StoreRuns:
    stored: list[PassResult] = field(default_factory=list)
    unchanged: list[PassResult] = field(default_factory=list)


def store_sizes(ws: Workspace, sizes: Sequence[int], repeats: int) -> dict[int, StoreRuns]:
    """``stored`` then ``unchanged`` passes into folders already holding ``size`` other
    certificate files; the sizes are interleaved so that other work hits all alike."""
    base = ws.collector(ws.settings("store", roots=150))
    messages = ws.corpus.messages
    run_pass(with_store(base, ws.folder / "store" / "warm-up"), messages, Outcome.STORED)
    collectors: dict[int, Collector] = {}
    try:
        for size in sizes:
            folder = ws.folder / "store" / f"files-{size}" / "certs"
            fill_store(folder, size, ws.corpus.root_pem())
            collectors[size] = with_store(base, folder)
        results = {size: StoreRuns() for size in sizes}
        for _ in range(max(1, repeats)):
            for size, collector in collectors.items():
                for message in messages:  # the corpus' own files only; the filler stays
                    with contextlib.suppress(FileNotFoundError):
                        collector.store.path_for(message.address).unlink()
                results[size].stored.append(run_pass(collector, messages, Outcome.STORED))
            for size, collector in collectors.items():
                results[size].unchanged.append(run_pass(collector, messages, Outcome.UNCHANGED))
        return results
    finally:
        shutil.rmtree(ws.folder / "store", ignore_errors=True)
