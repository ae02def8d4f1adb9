"""One 20 MB message through the pipeline, in a subprocess of its own, for its time and peak RSS.

The parent (:func:`measure`) starts ``python -m bench.bigmsg INI WARM BIG``. The child builds the
collector from the INI, judges the small WARM message first (imports, DNS cache, code paths),
then reads BIG and times ``read_smime_email`` on it. It prints one JSON line with the time, the
verdict and its memory: VmHWM (peak RSS of the whole process, interpreter included) before and
after, read from /proc.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from bench import REPO, BenchError
from bench.procfs import status_bytes

if TYPE_CHECKING:
    from bench.workspace import Workspace
    from smime_collector.pipeline import Collector


@dataclass(frozen=True)
class BigResult:
    size: int
    seconds: float
    outcome: str
    reason: str
    peak_rss: int  # VmHWM of the child after the big message, bytes
    peak_before: int  # VmHWM after the warm-up, before reading the big message
    rss_before: int  # VmRSS before reading the big message
    stages: dict[str, float]  # seconds per pipeline stage (metrics.STAGE_DURATION)


def measure(ws: Workspace, size: int, profile: bool = False) -> tuple[BigResult, str]:
    """Time and peak RSS of the big message; with ``profile``, also a cProfile report of a
    second, separate judgement of it (so profiling does not disturb the measurement)."""
    from bench.corpus import big_message  # the child needs none of the generating code

    path = big_message(ws.corpus, size)
    ini = ws.write_ini("big", roots=150)
    warm = ws.path("big", "warm.eml")
    warm.write_bytes(ws.corpus.messages[0].raw)
    report = ws.path("big", "profile.txt")
    extra = [str(report)] if profile else []
    proc = subprocess.run(
        [sys.executable, "-m", "bench.bigmsg", str(ini), str(warm), str(path), *extra],
        cwd=REPO,
        capture_output=True,
        timeout=300,
        check=False,
    )
    if proc.returncode != 0:
        raise BenchError(f"bench.bigmsg exited {proc.returncode}: {proc.stderr.decode()[-2000:]}")
    data = json.loads(proc.stdout.decode().strip().splitlines()[-1])
    return BigResult(**data), report.read_text() if profile else ""


def main(argv: list[str]) -> int:
    from prometheus_client import REGISTRY

    from smime_collector.config import load_settings
    from smime_collector.logsetup import attach
    from smime_collector.pipeline import Collector
    from smime_collector.verdict import Outcome

    ini, warm, big, *profile = (Path(a) for a in argv)
    settings = load_settings(ini)
    collector = Collector.build(settings, attach("webapp", settings.log_file, "INFO"))
    verdict = collector.read_smime_email(warm.read_bytes())
    if verdict.outcome is not Outcome.STORED:
        print(f"warm-up message: {verdict.outcome.value} {verdict.reason}", file=sys.stderr)
        return 1

    def stage_sums() -> dict[str, float]:
        names = ("parse", "dkim", "cms", "chain", "store")
        return {
            name: REGISTRY.get_sample_value("smime_stage_duration_seconds_sum", {"stage": name})
            or 0.0
            for name in names
        }

    before = status_bytes("self", "VmHWM", "VmRSS")
    stages = stage_sums()
    raw = big.read_bytes()
    start = time.perf_counter()
    verdict = collector.read_smime_email(raw)
    seconds = time.perf_counter() - start
    after = status_bytes("self", "VmHWM")
    stages = {name: value - stages[name] for name, value in stage_sums().items()}
    result = BigResult(
        size=len(raw),
        seconds=seconds,
        outcome=verdict.outcome.value,
        reason=verdict.reason,
        peak_rss=after["VmHWM"],
        peak_before=before["VmHWM"],
        rss_before=before["VmRSS"],
        stages=stages,
    )
    if profile:
        profile[0].write_text(_profiled(collector, raw))
    print(json.dumps(result.__dict__))
    return 0


def _profiled(collector: Collector, raw: bytes, top: int = 25) -> str:
    import cProfile
    import io
    import pstats

    profiler = cProfile.Profile()
    profiler.enable()
    verdict = collector.read_smime_email(raw)
    profiler.disable()
    out = io.StringIO()
    out.write(f"== cProfile of the big message again ({verdict.outcome.value}), by own time ==\n")
    pstats.Stats(profiler, stream=out).strip_dirs().sort_stats("tottime").print_stats(top)
    return out.getvalue()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
