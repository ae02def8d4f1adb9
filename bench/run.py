"""``python -m bench.run [--quick] [--only SECTION ...] [--profile]``: run, print, write JSON.

Sections run in this order, sharing one corpus, one loopback DNS server and (for the HTTP
parts) one gunicorn: in-process, http, scaling by batch size, memory (of those gunicorn
workers), scaling by trust bundle and store size, the big message, then the two stores (with
their own servers and a throwaway PostgreSQL). A failing section is
reported as an error and the others still run; servers are stopped by pid in every case.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import signal
import sys
import time
import traceback
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

from bench import CACHE_DIR, RESULTS_FILE, BenchError, bigmsg, inprocess, pathrev
from bench.corpus import Corpus, load_corpus
from bench.http_load import LoadResult, batch_bodies, gunicorn, run_load, server_pids, warm_up
from bench.inprocess import PassResult, best, least_cpu
from bench.procfs import children, process_memory
from bench.profiling import profile_passes
from bench.report import Report, at_least, at_most, mb, ms, rate, us
from bench.scaling import LoadPlan, batch_sizes, store_sizes, trust_sizes
from bench.stores import cluster, listings, new_database, throughput
from bench.workspace import Workspace, workspace
from tests.servers import Gunicorn

SECTIONS = ("in-process", "revocation", "http", "scaling", "big", "memory", "stores")
WORKERS = 2
#: What growing the batch, the trust bundle or the store may cost per message, at most.
SCALING_TARGET = at_most(1.2, "≤ 1.20x")


@dataclass(frozen=True)
class Params:
    name: str
    corpus: int
    repeats: int
    http_requests: int
    http_seconds: float
    batches: dict[int, LoadPlan]
    trust_sizes: tuple[int, int]
    store_sizes: tuple[int, int]
    scaling_repeats: int = 3
    big_size: int = 20_000_000
    listing_size: int = 100_000
    store_rounds: int = 2
    http_configs: tuple[tuple[int, int], ...] = ((1, 8), (1, 32), (10, 8), (10, 32))


QUICK = Params(
    name="quick",
    corpus=200,
    repeats=1,
    scaling_repeats=2,
    http_requests=300,
    http_seconds=3.0,
    batches={1: LoadPlan(8, 200, 3.0), 10: LoadPlan(8, 30, 3.0), 100: LoadPlan(8, 8, 10.0)},
    trust_sizes=(150, 1500),
    store_sizes=(1_000, 10_000),
    listing_size=10_000,
    store_rounds=1,
)
FULL = Params(
    name="full",
    corpus=200,
    repeats=3,
    scaling_repeats=4,
    http_requests=5_000,
    http_seconds=15.0,
    batches={1: LoadPlan(8, 2_000, 15.0), 10: LoadPlan(8, 300, 15.0), 100: LoadPlan(8, 40, 30.0)},
    trust_sizes=(150, 1500),
    store_sizes=(1_000, 100_000),
)


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


@dataclass
class Bench:
    """What the sections share: parameters, report, corpus, workspace and the lazy server."""

    params: Params
    report: Report
    corpus: Corpus
    ws: Workspace
    stack: contextlib.ExitStack
    server: Gunicorn | None = None
    profile: bool = False
    load_results: list[LoadResult] = field(default_factory=list)
    profiles: list[str] = field(default_factory=list)

    def gunicorn(self) -> Gunicorn:
        """gunicorn with two workers, warmed up: every corpus message sent once (stored)."""
        if self.server is None:
            ini = self.ws.write_ini("http", roots=150)
            say(f"starting gunicorn with {WORKERS} workers on 127.0.0.1 ...")
            server = self.stack.enter_context(
                gunicorn(ini, self.ws.folder / "http" / "gunicorn", workers=WORKERS)
            )
            messages = self.corpus.messages
            warm = warm_up(server.url, messages)
            if warm.errors:
                raise BenchError(f"warm-up: {warm.errors} errors, first: {warm.first_error}")
            stored = list((self.ws.folder / "http" / "certs").glob("*.crt"))
            if len(stored) != len(messages):
                raise BenchError(
                    f"warm-up stored {len(stored)} of {len(messages)} certificates; "
                    f"first other verdict: {_first_bad_verdict(self.ws.folder / 'http')}"
                )
            self.server = server
        return self.server

    def load(
        self, bodies: list[bytes], batch: int, concurrency: int, requests: int, seconds: float
    ) -> LoadResult:
        result = run_load(
            self.gunicorn().url,
            bodies,
            batch=batch,
            concurrency=concurrency,
            max_requests=requests,
            max_seconds=seconds,
            server_pids=server_pids(self.gunicorn()),
        )
        self.load_results.append(result)
        return result


def _first_bad_verdict(folder: Path) -> str:
    """The first verdict line in a service log that is neither stored nor unchanged."""
    with contextlib.suppress(OSError):
        for line in (folder / "webapp.log").read_text("utf-8", "replace").splitlines():
            if "| outcome=" in line and "outcome=stored" not in line:
                if "outcome=unchanged" not in line:
                    return line.split("| ", 1)[1]
    return "none in the log"


# -- sections --------------------------------------------------------------------------------


def section_in_process(b: Bench) -> None:
    say("in-process: stored and unchanged passes, crypto floor ...")
    result = inprocess.measure(b.ws, b.params.repeats)
    r, s, u, f = b.report, result.stored, result.unchanged, result.floor
    sec = "in-process"
    target = at_least(1000, "≥ 1,000/s")
    for label, p in (("stored pass (fresh folder)", s), ("unchanged pass", u)):
        shown = f"{rate(p.rate)} (per CPU second {rate(p.cpu_rate)})"
        r.add(sec, f"{label}: messages/s, 1 core", shown, p.rate, target)
    s_stages, u_stages = s.stage_per_message(), u.stage_per_message()
    for stage in s_stages:
        r.add(
            sec,
            f"  stage {stage}, per message (stored / unchanged)",
            f"{us(s_stages[stage])} / {us(u_stages[stage])}",
        )
    r.add(
        sec,
        "crypto floor per message",
        f"{us(f.per_message)} (4 RSA {us(f.rsa_per_message)}, SHA-256 {us(f.digest_per_message)})",
        f.per_message,
    )
    ratio_target = at_most(8, "≤ 8x")
    for label, p in (("stored", s), ("unchanged", u)):
        ratio = p.per_message / f.per_message
        r.add(
            sec,
            f"pipeline ÷ crypto floor ({label})",
            f"{ratio:.1f}x ({us(p.per_message)})",
            ratio,
            ratio_target,
        )
    b.report.details[sec] = {
        "messages": s.messages,
        "mean_message_bytes": round(b.corpus.mean_size),
        "stored": _pass_dict(s),
        "unchanged": _pass_dict(u),
        "floor_us": {
            "total": f.per_message * 1e6,
            "rsa": f.rsa_per_message * 1e6,
            "sha256": f.digest_per_message * 1e6,
        },
    }


def section_revocation(b: Bench) -> None:
    say("revocation: the seed's Gmail message, path validation and revocation cold/warm ...")
    res = pathrev.measure(b.ws, 200 if b.params.name == "full" else 50, b.params.repeats)
    sec = "revocation"
    gmail_rate = 1 / res.gmail_per_message
    b.report.add(
        sec,
        f"seed's Gmail message, in-process ({res.gmail_verdict} first, then unchanged)",
        f"{rate(gmail_rate)} ({us(res.gmail_per_message)} each)",
        gmail_rate,
    )
    times = gmail_rate / pathrev.SEED_RATE
    b.report.add(
        sec, "  times the seed's throughput (48/s)", f"{times:.1f}x", times, at_least(20, "≥ 20x")
    )
    b.report.add(sec, "path validation, Gmail chain, cold", us(res.path_cold), res.path_cold)
    b.report.add(
        sec, "path validation, Gmail chain, warm (cached)", us(res.path_warm), res.path_warm
    )
    b.report.add(
        sec, "revocation, 2 CRLs over loopback HTTP, cold", us(res.revocation_cold),
        res.revocation_cold,
    )  # fmt: skip
    b.report.add(
        sec, "revocation, 2 CRLs, warm (cached until nextUpdate)", us(res.revocation_warm),
        res.revocation_warm,
    )  # fmt: skip
    b.report.details[sec] = {
        "gmail_us": res.gmail_per_message * 1e6,
        "path_cold_us": res.path_cold * 1e6,
        "path_warm_us": res.path_warm * 1e6,
        "revocation_cold_us": res.revocation_cold * 1e6,
        "revocation_warm_us": res.revocation_warm * 1e6,
    }


def _pass_dict(p: PassResult) -> dict[str, object]:
    return {
        "messages_per_second": p.rate,
        "messages_per_cpu_second": p.cpu_rate,
        "cpu_us_per_message": p.cpu_per_message * 1e6,
        "us_per_message": p.per_message * 1e6,
        "stage_us_per_message": {k: v * 1e6 for k, v in p.stage_per_message().items()},
    }


def section_http(b: Bench) -> None:
    say(f"http: gunicorn -w {WORKERS}, batches of 1 and 10 at 8 and 32 clients ...")
    b.gunicorn()
    sec, details = "http", {}
    messages = b.corpus.messages
    for batch, clients in b.params.http_configs:
        bodies = batch_bodies(messages, batch, max(1, len(messages) // batch))
        res = b.load(bodies, batch, clients, b.params.http_requests, b.params.http_seconds)
        main = batch == 1 and clients == 8
        label = f"{batch}-msg batches, {clients} clients"
        r = b.report
        r.add(
            sec,
            f"{label}: requests/s",
            rate(res.rps),
            res.rps,
            at_least(500, "≥ 500/s") if main else None,
        )
        p50, p99 = res.percentile(50), res.percentile(99)
        r.add(
            sec,
            f"{label}: latency p50 / p99",
            f"{ms(p50)} / {ms(p99)}",
            p99,
            at_most(0.025, "p99 ≤ 25 ms") if main else None,
        )
        if main and res.requests and not math.isnan(res.server_cpu):
            ceiling = WORKERS / (res.server_cpu / res.requests)
            r.add(
                sec,
                f"{label}: server CPU per request",
                f"{us(res.server_cpu / res.requests)} (≤ {rate(ceiling)} on {WORKERS} idle cores)",
                res.server_cpu / res.requests,
            )
        r.add(
            sec,
            f"{label}: errors (not 200)",
            f"{res.errors} of {res.requests}",
            res.errors,
            at_most(0, "0"),
        )
        details[label] = _load_dict(res)
    bad = _bad_verdicts(b.gunicorn().url)
    b.report.add(
        sec, "verdicts other than stored/unchanged (/metrics)", str(bad), bad, at_most(0, "0")
    )
    b.report.details[sec] = details


def _load_dict(res: LoadResult) -> dict[str, object]:
    return {
        "requests": res.requests,
        "messages": res.messages,
        "seconds": res.seconds,
        "requests_per_second": res.rps,
        "messages_per_second": res.messages / res.seconds if res.seconds else 0.0,
        "p50_ms": res.percentile(50) * 1e3,
        "p99_ms": res.percentile(99) * 1e3,
        "max_ms": max(res.latencies, default=0.0) * 1e3,
        "server_cpu_seconds": res.server_cpu,
        "client_cpu_seconds": res.client_cpu,
        "server_cpu_us_per_message": res.cpu_per_message * 1e6,
        "statuses": dict(res.statuses),
        "errors": res.errors,
        "first_error": res.first_error,
    }


def _bad_verdicts(url: str) -> int:
    """Messages whose verdict was rejected or tempfail, summed over the workers."""
    with urllib.request.urlopen(url + "metrics", timeout=10) as answer:
        text = answer.read().decode()
    bad = 0.0
    for line in text.splitlines():
        if line.startswith("smime_messages_total{") and (
            'outcome="rejected"' in line or 'outcome="tempfail"' in line
        ):
            bad += float(line.rsplit(" ", 1)[1])
    return int(bad)


def section_scaling_batch(b: Bench) -> None:
    say("scaling: cost per message against batch size (HTTP) ...")
    server = b.gunicorn()
    results = batch_sizes(server.url, b.corpus.messages, b.params.batches, server_pids(server))
    b.load_results.extend(results.values())
    sec = "scaling"
    for batch, res in results.items():
        b.report.add(
            sec,
            f"batch {batch}: cost per message (server CPU / wall, {res.concurrency} clients)",
            f"{us(res.cpu_per_message)} / {us(res.per_message)}",
            res.cpu_per_message,
        )
    # Server CPU per message: unlike wall time, it does not count other work on the machine.
    costs = [res.cpu_per_message for res in results.values()]
    if any(math.isnan(c) for c in costs):
        costs = [res.per_message for res in results.values()]
    ratio = max(costs) / costs[0]
    b.report.add(sec, "batch size: worst ÷ batch 1 (CPU)", f"{ratio:.2f}x", ratio, SCALING_TARGET)
    errors = sum(res.errors for res in results.values())
    b.report.add(sec, "batch size: errors (not 200)", str(errors), errors, at_most(0, "0"))
    b.report.details["scaling-batch"] = {str(k): _load_dict(v) for k, v in results.items()}


def section_scaling_trust(b: Bench) -> None:
    sizes = b.params.trust_sizes
    say(f"scaling: trust bundle of {' vs '.join(f'{n:,}' for n in sizes)} roots ...")
    runs = trust_sizes(b.ws, sizes, b.params.scaling_repeats)
    sec = "scaling"
    for roots in sizes:
        p = least_cpu(runs[roots])
        chain = p.stage_per_message()["chain"]
        b.report.add(
            sec,
            f"{roots:,} roots: cost per message (CPU / wall, unchanged)",
            f"{us(p.cpu_per_message)} / {us(p.per_message)} (chain {us(chain)})",
            p.cpu_per_message,
        )
    _growth(b.report, "trust bundle: large ÷ small (CPU)", runs[sizes[0]], runs[sizes[1]])
    b.report.details["scaling-trust"] = {
        str(n): [_pass_dict(p) for p in passes] for n, passes in runs.items()
    }


def _growth(
    report: Report, name: str, small: Sequence[PassResult], large: Sequence[PassResult]
) -> None:
    """The scaling row: CPU per message of the large case over the small one (each its
    least disturbed pass), the same by wall time (best passes) beside it."""
    ratio = least_cpu(large).cpu_per_message / least_cpu(small).cpu_per_message
    wall = best(large).per_message / best(small).per_message
    report.add("scaling", name, f"{ratio:.2f}x (wall {wall:.2f}x)", ratio, SCALING_TARGET)


def section_scaling_store(b: Bench) -> None:
    sizes = b.params.store_sizes
    say(f"scaling: store of {' vs '.join(f'{n:,}' for n in sizes)} certificate files ...")
    runs = store_sizes(b.ws, sizes, b.params.scaling_repeats)
    sec = "scaling"
    for files in sizes:
        stored, unchanged = least_cpu(runs[files].stored), least_cpu(runs[files].unchanged)
        b.report.add(
            sec,
            f"{files:,} files: CPU per message (stored / unchanged)",
            f"{us(stored.cpu_per_message)} / {us(unchanged.cpu_per_message)}",
            stored.cpu_per_message,
        )
        b.report.add(
            sec,
            f"{files:,} files: wall per message (stored / unchanged)",
            f"{us(best(runs[files].stored).per_message)} / "
            f"{us(best(runs[files].unchanged).per_message)}",
            best(runs[files].stored).per_message,
        )
    small, large = runs[sizes[0]], runs[sizes[1]]
    for label in ("stored", "unchanged"):
        name = f"store size: large ÷ small ({label}, CPU)"
        _growth(b.report, name, getattr(small, label), getattr(large, label))
    b.report.details["scaling-store"] = {
        str(n): {
            "stored": [_pass_dict(p) for p in r.stored],
            "unchanged": [_pass_dict(p) for p in r.unchanged],
        }
        for n, r in runs.items()
    }


def section_big(b: Bench) -> None:
    size = b.params.big_size
    say(f"big: one {size / 1e6:.0f} MB message in a subprocess ...")
    res, profile = bigmsg.measure(b.ws, size, b.profile)
    b.profiles.append(profile)
    sec = "big"
    label = f"{res.size / 1e6:.0f} MB message"
    b.report.add(
        sec,
        f"{label}: verdict",
        f"{res.outcome} {res.reason}",
        float(res.outcome == "stored"),
        at_least(1, "stored"),
    )
    b.report.add(
        sec, f"{label}: time to judge", ms(res.seconds), res.seconds, at_most(1.0, "≤ 1 s")
    )
    limit = 10 * res.size
    b.report.add(
        sec,
        f"{label}: peak RSS of the process",
        f"{mb(res.peak_rss)} (+{mb(res.peak_rss - res.peak_before)} over warm peak)",
        res.peak_rss,
        at_most(limit, f"≤ {mb(limit)}"),
    )
    other = max(0.0, res.seconds - sum(res.stages.values()))
    stages = ", ".join(f"{k} {ms(v)}" for k, v in [*res.stages.items(), ("other", other)] if v)
    b.report.add(sec, f"{label}: stages", stages)
    b.report.details[sec] = res.__dict__


def section_memory(b: Bench) -> None:
    if not b.load_results:  # --only memory: put some load on the workers first
        say("memory: short load first (1- and 100-message batches) ...")
        messages = b.corpus.messages
        b.load(batch_bodies(messages, 1, len(messages)), 1, 8, 500, 5.0)
        b.load(batch_bodies(messages, 100, 2), 100, 8, 8, 20.0)
    server = b.gunicorn()
    say("memory: peak RSS of the gunicorn workers ...")
    workers = [process_memory(pid) for pid in children(server.process.pid)]
    master = process_memory(server.process.pid)
    limit = 100_000_000
    for i, w in enumerate(workers, 1):
        b.report.add(
            "memory",
            f"gunicorn worker {i}: peak RSS (VmHWM)",
            f"{mb(w.peak)} (now {mb(w.current)})",
            w.peak,
            at_most(limit, f"≤ {mb(limit)}"),
        )
    b.report.add("memory", "gunicorn master: peak RSS (VmHWM)", mb(master.peak), master.peak)
    b.report.details["memory"] = {
        "workers": [w.__dict__ for w in workers],
        "master": master.__dict__,
        "after_requests": sum(r.requests for r in b.load_results),
    }


def section_stores(b: Bench) -> None:
    say(
        "stores: HTTP load against the folder and PostgreSQL, then listing "
        f"{b.params.listing_size:,} certificates from each ..."
    )
    sec, r = "stores", b.report
    with cluster() as postgres:
        runs = throughput(
            b.ws,
            new_database(postgres),
            b.params.http_requests,
            b.params.http_seconds,
            b.params.store_rounds,
            WORKERS,
        )
        found = listings(b.ws, new_database(postgres), b.params.listing_size, 3)
    for backend in ("folder", "postgresql"):
        warm = runs.warm_up[backend]
        r.add(
            sec,
            f"{backend}: first pass (stored), 1-msg batches, 8 clients",
            f"{rate(warm.rps)}, p99 {ms(warm.percentile(99))}",
            warm.rps,
        )
        best_run = runs.best(backend)
        r.add(
            sec,
            f"{backend}: 1-msg batches, 8 clients: requests/s (best of {len(runs.runs[backend])})",
            rate(best_run.rps),
            best_run.rps,
        )
        r.add(
            sec,
            f"{backend}: latency p50 / p99",
            f"{ms(best_run.percentile(50))} / {ms(best_run.percentile(99))}",
            best_run.percentile(99),
        )
        errors = sum(run.errors for run in runs.runs[backend]) + warm.errors
        r.add(sec, f"{backend}: errors (not 200)", str(errors), errors, at_most(0, "0"))
    ratio = runs.best("postgresql").rps / runs.best("folder").rps
    r.add(
        sec,
        "postgresql ÷ folder throughput",
        f"{ratio:.2f}x",
        ratio,
        at_least(0.8, "≥ 0.80x"),
    )
    for backend, listing in found.items():
        label = f"{backend}: GET /certs, {listing.size:,} certificates"
        warm_best = min(listing.warm)
        r.add(
            sec,
            f"{label} ({mb(listing.payload_bytes)})",
            f"{ms(warm_best)} (first {ms(listing.first)})",
            warm_best,
            at_most(1.0, "< 1 s"),
        )
        r.add(
            sec,
            f"{backend}: GET /certs right after a write",
            ms(listing.after_write),
            listing.after_write,
            at_most(1.0, "< 1 s"),
        )
        r.add(sec, f"{backend}: GET /certs?expiring-within=30d", ms(listing.expiring))
    b.report.details[sec] = {
        "throughput": {
            backend: {
                "warm_up": _load_dict(runs.warm_up[backend]),
                "runs": [_load_dict(run) for run in runs.runs[backend]],
            }
            for backend in runs.runs
        },
        "listing": {backend: listing.__dict__ for backend, listing in found.items()},
    }


STEPS: tuple[tuple[str, Callable[[Bench], None]], ...] = (
    ("in-process", section_in_process),
    ("revocation", section_revocation),
    ("http", section_http),
    ("scaling", section_scaling_batch),
    ("memory", section_memory),
    ("scaling", section_scaling_trust),
    ("scaling", section_scaling_store),
    ("big", section_big),
    ("stores", section_stores),
)


# -- main ------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small counts: a smoke run (< 1 min)")
    parser.add_argument(
        "--only",
        action="append",
        choices=SECTIONS,
        default=[],
        help="run only this section (repeatable)",
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="also print a cProfile of one stored and one unchanged in-process pass",
    )
    return parser.parse_args(argv)


def _terminate(_signum: int, _frame: FrameType | None) -> None:
    # Treated like Ctrl-C: asyncio.run cancels the load cleanly, and KeyboardInterrupt unwinds
    # through the finally blocks that stop gunicorn and the DNS server.
    signal.raise_signal(signal.SIGINT)


def run_sections(
    params: Params, report: Report, corpus: Corpus, only: set[str], profile: bool
) -> None:
    """Run the chosen sections in order; servers and the workspace go away at the end."""
    with workspace(corpus) as ws, contextlib.ExitStack() as stack:
        bench = Bench(params, report, corpus, ws, stack, profile=profile)
        for section, step in STEPS:
            if section not in only:
                continue
            try:
                step(bench)
            except Exception as exc:  # noqa: BLE001 - one broken section must not hide the others
                traceback.print_exc()
                report.errors.append(f"{step.__name__}: {type(exc).__name__}: {exc}")
        if profile:
            say("profile: cProfile of a stored and an unchanged in-process pass ...")
            text = "\n".join([profile_passes(ws, corpus), *bench.profiles])
            (CACHE_DIR / f"profile-{params.name}.txt").write_text(text)
            print(text)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    params = QUICK if args.quick else FULL
    only = set(args.only) or set(SECTIONS)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # even when started with it ignored
    signal.signal(signal.SIGTERM, _terminate)
    report = Report(params.name)
    busy = report.load_before[0]
    start = time.perf_counter()
    corpus = load_corpus(params.corpus, log=say)
    try:
        run_sections(params, report, corpus, only, args.profile)
    except KeyboardInterrupt:
        report.errors.append("interrupted (servers stopped); results.json left as it was")
        print(report.table())
        return 130
    if busy > 0.5:
        report.notes.append(
            f"load average was {busy:.2f} at start on {os.cpu_count()} CPUs: "
            "other work was running, so the figures are lower and noisier than on an idle machine"
        )
    report.notes.append(
        f"{params.name} run, corpus of {len(corpus.messages)} messages of "
        f"{corpus.mean_size / 1e3:.1f} kB on average, {time.perf_counter() - start:.0f} s"
    )
    print(report.table())
    for note in report.notes:
        print(f"note: {note}")
    report.write_json(RESULTS_FILE)
    print(f"JSON: {RESULTS_FILE.relative_to(RESULTS_FILE.parent.parent)}")
    return 1 if report.errors else 0


if __name__ == "__main__":
    sys.exit(main())
