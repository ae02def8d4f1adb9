"""Benchmark of smime-collector: in-process pipeline, HTTP under load, scaling, memory.

Run from the repository root with ``python -m bench.run`` (``make bench``); see bench/README.md.
Everything runs on 127.0.0.1 only; servers are stopped by pid at the end, even on error.
"""

from __future__ import annotations

import os
from pathlib import Path

# Metrics of the in-process runs are read from this process' registry, and gunicorn must make
# its own multiprocess folder: both need prometheus_client imported without this variable.
os.environ.pop("PROMETHEUS_MULTIPROC_DIR", None)

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
CACHE_DIR = BENCH_DIR / ".cache"
RESULTS_FILE = BENCH_DIR / "results.json"


class BenchError(RuntimeError):
    """The benchmark cannot measure what it means to (wrong verdicts, server errors, ...)."""
