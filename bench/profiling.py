"""``--profile``: cProfile of one in-process pass, printed as the top functions by own time."""

from __future__ import annotations

import cProfile
import io
import pstats

from bench.corpus import Corpus
from bench.inprocess import run_pass
from bench.workspace import Workspace, with_store
from smime_collector.verdict import Outcome


def profile_passes(ws: Workspace, corpus: Corpus, top: int = 30) -> str:
    """Profile a ``stored`` and an ``unchanged`` pass; return both reports as text."""
    settings = ws.settings("profile", roots=150)
    collector = with_store(ws.collector(settings), ws.folder / "profile" / "certs")
    run_pass(
        with_store(collector, ws.folder / "profile" / "warm-up"), corpus.messages, Outcome.STORED
    )
    out = io.StringIO()
    for expect in (Outcome.STORED, Outcome.UNCHANGED):
        profiler = cProfile.Profile()
        profiler.enable()
        run_pass(collector, corpus.messages, expect)
        profiler.disable()
        for key, title in (("tottime", "own time"), ("cumulative", "cumulative time")):
            out.write(f"\n== cProfile, {expect.value} pass, top {top} by {title} ==\n")
            stats = pstats.Stats(profiler, stream=out)
            stats.strip_dirs().sort_stats(key).print_stats(top)
    return out.getvalue()
