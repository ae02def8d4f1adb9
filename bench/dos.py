"""Issue 10's denial-of-service cases, timed: ``python -m bench.dos [--only NAME ...]``.

Each in-process case runs in a subprocess of its own (``python -m bench.dos --case NAME``): it
starts a loopback DNS server, builds a collector as the service does (``dns-timeout = 5``, the
shipped default), judges the hostile message once and prints one JSON line: seconds, verdict,
DNS queries received and the growth of peak RSS. The parent caps each case at ``--cap``
seconds (a case that outlives it is reported as such: gunicorn would have killed the worker
long before). The HTTP cases start gunicorn as ``make run`` does (2 sync workers, 25 s timeout)
and time the answer: a batch of 7 messages with DNS silent, and slowloris clients (direct, and
through nginx with ``contrib/nginx/smime-collector.conf`` when nginx is installed).

Every load is bounded; every process started here is stopped by pid. Nothing leaves 127.0.0.1.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bench import REPO
from bench.procfs import status_bytes
from smime_collector.resources import SHIPPED_BUNDLE

TOKEN = "bench token"


@dataclass(frozen=True)
class Case:
    name: str
    what: str  # the words
    before: str  # what the issue measured
    build: Callable  # (Attacker, folder) -> bytes
    dns_mode: str = "normal"
    dkim: str = "require"


def _cms_attributes(attacker, folder: Path) -> bytes:
    from tests import hostile, pki

    root = pki.make_root("DoS bench root")
    (folder / "root.pem").write_bytes(root.cert_pem())
    leaf = pki.make_leaf(root, attacker.address)
    content = pki.mime_body("hello\n")
    der = hostile.many_attributes(content, leaf, 90_000)
    return attacker.sign(hostile.detached_message(content, der, attacker.address))


def _cms_empty(attacker, folder: Path) -> bytes:
    from tests import hostile, pki

    root = pki.make_root("DoS bench root")
    (folder / "root.pem").write_bytes(root.cert_pem())
    leaf = pki.make_leaf(root, attacker.address)
    content = pki.mime_body("hello\n")
    der = hostile.empty_value_set(content, leaf, "message-digest")
    return attacker.sign(hostile.detached_message(content, der, attacker.address))


def _nested(attacker, folder: Path) -> bytes:
    from tests import hostile

    return hostile.nested_message(attacker.address, 19, 40_000_000)


def _nested_within(attacker, folder: Path) -> bytes:
    from tests import hostile

    return hostile.nested_message(attacker.address, 8, 40_000_000)


CASES = [
    Case(
        "huge-exponent-16384",
        "DKIM key: 16,384-bit modulus, huge public exponent",
        "14.6 s per signature; both workers killed, HTTP 500",
        lambda a, f: a.huge_exponent(16384),
    ),
    Case(
        "huge-exponent-8192",
        "DKIM key: 8,192-bit modulus, huge public exponent",
        "1.67 s per signature",
        lambda a, f: a.huge_exponent(8192),
    ),
    Case(
        "huge-modulus-300000",
        "DKIM key: 300,000-bit modulus, e = 65537",
        "2.4 s per signature, on every delivery",
        lambda a, f: a.huge_modulus(300_000),
    ),
    Case(
        "silent-selectors-20",
        "20 DKIM signatures whose selectors never answer",
        "20 x 5 s of DNS waits, and a 500",
        lambda a, f: a.silent_selectors(20),
        dns_mode="drop",
    ),
    Case(
        "third-party-selectors-1000",
        "1,000 signatures naming third-party domains",
        "1,000 DNS queries on every retry",
        lambda a, f: a.third_party_selectors(1000),
    ),
    Case(
        "junk-signatures-8000",
        "8,000 junk DKIM-Signature headers (456 KB), no DNS",
        "workers killed",
        lambda a, f: a.junk_signatures(8000),
    ),
    Case(
        "junk-signatures-16000",
        "16,000 junk DKIM-Signature headers",
        "57 s",
        lambda a, f: a.junk_signatures(16000),
    ),
    Case(
        "junk-signatures-3500",
        "3,500 junk DKIM-Signature headers (238 KB, under the header bound)",
        "(quadratic in the header count)",
        lambda a, f: a.junk_signatures(3500),
    ),
    Case(
        "folded-header-400000",
        "one header folded over 400,000 lines",
        "21.7 s",
        lambda a, f: a.folded_header(400_000),
    ),
    Case(
        "folded-header-60000",
        "one header folded over 60,000 lines (under the header bound)",
        "(quadratic in the fold count)",
        lambda a, f: a.folded_header(60_000),
    ),
    Case(
        "absent-h-10000",
        "h= naming 10,000 absent headers",
        "9.2 s",
        lambda a, f: a.absent_h(10_000),
    ),
    Case(
        "cms-attributes-90000",
        "90,000 signed attributes in a CMS under the 1 MiB bound",
        "7.7 s",
        _cms_attributes,
    ),
    Case(
        "cms-empty-message-digest",
        "messageDigest attribute with an empty SET of values",
        "IndexError: tempfail/internal-error, retried for ever",
        _cms_empty,
    ),
    Case(
        "leading-whitespace",
        "header block starting with whitespace",
        "IndexError in dkimpy: tempfail/internal-error, retried for ever",
        lambda a, f: a.leading_whitespace(),
    ),
    Case(
        "nested-19-40MB",
        "40 MB message nested 19 deep",
        "+648 MB of memory",
        _nested,
        dkim="off",
    ),
    Case(
        "nested-8-40MB",
        "40 MB message nested 8 deep (the deepest allowed)",
        "(a copy per level)",
        _nested_within,
        dkim="off",
    ),
]
BY_NAME = {case.name: case for case in CASES}


def run_case(name: str) -> dict:
    """In this process: build the case, judge it once, report time, verdict, DNS, memory."""
    from smime_collector.config import load_settings
    from smime_collector.logsetup import attach
    from smime_collector.pipeline import Collector
    from tests.dnsserver import LoopbackDNS
    from tests.hostile import Attacker

    case = BY_NAME[name]
    folder = Path(tempfile.mkdtemp(prefix="dos-"))
    dns = LoopbackDNS().start()
    try:
        attacker = Attacker(dns)
        raw = case.build(attacker, folder)
        own_root = (folder / "root.pem").exists()
        trusted = "root.pem" if own_root else "shipped"
        (folder / "webapp.ini").write_text(
            "[webapp]\nuser-certs-dir = certs\nlog-file = webapp.log\n"
            f"trusted-certs = {trusted}\ndkim = {case.dkim}\n"
            f"dns-nameservers = {dns.nameserver}\ndns-timeout = 5\n"
        )
        settings = load_settings(folder / "webapp.ini")
        collector = Collector.build(settings, attach(f"dos-{name}", settings.log_file))
        dns.mode = case.dns_mode
        dns.reset_queries()
        peak_before = status_bytes("self", "VmHWM")["VmHWM"]
        start = time.perf_counter()
        verdict = collector.read_smime_email(raw)
        seconds = time.perf_counter() - start
        peak_after = status_bytes("self", "VmHWM")["VmHWM"]
        return {
            "case": name,
            "bytes": len(raw),
            "seconds": round(seconds, 4),
            "outcome": verdict.outcome.value,
            "reason": verdict.reason,
            "detail": verdict.detail[:160],
            "dns_queries": dns.queries,
            "peak_rss_growth_mb": round((peak_after - peak_before) / 1e6, 1),
        }
    finally:
        dns.stop()
        shutil.rmtree(folder, ignore_errors=True)


def measure_case(name: str, cap: float) -> dict:
    """The case in a subprocess of its own, cut off after ``cap`` seconds."""
    started = time.perf_counter()
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "bench.dos", "--case", name],
            cwd=REPO,
            capture_output=True,
            timeout=cap,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return {"case": name, "seconds": None, "outcome": f"still running after {cap:.0f} s"}
    if proc.returncode != 0:
        return {
            "case": name,
            "seconds": round(time.perf_counter() - started, 1),
            "outcome": "crashed",
            "detail": proc.stderr.decode(errors="replace")[-300:],
        }
    return json.loads(proc.stdout.decode().strip().splitlines()[-1])


# -- through gunicorn --------------------------------------------------------------------------


def _gunicorn(folder: Path, nameserver: str, trusted: Path, extra_env: dict[str, str]):
    from tests.servers import start_gunicorn

    ini = folder / "webapp.ini"
    ini.write_text(
        "[webapp]\n"
        f"x-messagesystems-webhook-token = {TOKEN}\n"
        "user-certs-dir = certs\nlog-file = webapp.log\n"
        f"trusted-certs = {trusted}\n"
        f"dns-nameservers = {nameserver}\ndns-timeout = 5\n"
    )
    saved = {key: os.environ.get(key) for key in extra_env}
    os.environ.update(extra_env)
    try:
        return start_gunicorn(ini, folder, workers=2)
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _post(url: str, body: bytes, timeout: float = 120) -> tuple[int, float]:
    request = urllib.request.Request(
        url,
        data=body,
        headers={"Content-Type": "application/json", "X-MessageSystems-Webhook-Token": TOKEN},
    )
    start = time.perf_counter()
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            status = response.status
    except urllib.error.HTTPError as exc:
        status = exc.code
    except OSError:
        status = 0  # connection reset: the worker was killed mid-request
    return status, time.perf_counter() - start


def batch_with_dns_down() -> dict:
    """7 genuine messages, DNS silent: the answer, how long it took, what metrics counted."""
    from tests.dnsserver import LoopbackDNS
    from tests.helpers import relay_event
    from tests.mailfactory import MailFactory

    folder = Path(tempfile.mkdtemp(prefix="dos-batch-"))
    dns = LoopbackDNS().start()
    server = None
    try:
        factory = MailFactory.create(dns, folder)
        batch = [relay_event(factory.signed(f"user{i}@batch.example")) for i in range(7)]
        server = _gunicorn(folder, dns.nameserver, factory.ca_file, {})
        dns.mode = "drop"
        status, seconds = _post(server.url, json.dumps(batch).encode())
        with urllib.request.urlopen(server.url + "metrics", timeout=10) as answer:
            metrics = answer.read().decode()
        counted = [
            line
            for line in metrics.splitlines()
            if line.startswith("smime_request_duration_seconds_count")
        ]
        return {
            "case": "batch-7-dns-down",
            "status": status,
            "seconds": round(seconds, 2),
            "counted": counted,
        }
    finally:
        if server:
            server.stop()
        dns.stop()
        shutil.rmtree(folder, ignore_errors=True)


def _slow_client(address: tuple[str, int]) -> socket.socket:
    sock = socket.create_connection(address, timeout=5)
    sock.sendall(b"POST / HTTP/1.1\r\nHost: 127.0.0.1\r\n")
    return sock


def slowloris(clients: int = 4, seconds: float = 30.0, via_nginx: bool = False) -> dict:
    """``clients`` connections trickling one header byte a second while a legitimate client
    asks ``/healthz`` every second: how many of its requests were answered, and how fast."""
    from tests.nginx import start_nginx

    folder = Path(tempfile.mkdtemp(prefix="dos-slow-"))
    server = proxy = None
    sockets: list[socket.socket] = []
    try:
        server = _gunicorn(folder, "127.0.0.1:9", SHIPPED_BUNDLE, {})
        url = server.url
        if via_nginx:
            proxy = start_nginx(folder, server.url)
            url = proxy.url
        host, port = url.split("//")[1].rstrip("/").split(":")
        sockets = [_slow_client((host, int(port))) for _ in range(clients)]
        answered, latencies = 0, []
        end = time.monotonic() + seconds
        asked = 0
        while time.monotonic() < end:
            for sock in sockets:
                try:
                    sock.sendall(b"X")
                except OSError:
                    pass
            asked += 1
            start = time.perf_counter()
            try:
                with urllib.request.urlopen(url + "healthz", timeout=5) as answer:
                    answer.read()
                answered += 1
                latencies.append(time.perf_counter() - start)
            except OSError:
                pass
            time.sleep(max(0.0, 1.0 - (time.perf_counter() - start)))
        latencies.sort()
        return {
            "case": f"slowloris-{clients}{'-nginx' if via_nginx else ''}",
            "asked": asked,
            "answered": answered,
            "p50_ms": round(1000 * latencies[len(latencies) // 2], 1) if latencies else None,
            "max_ms": round(1000 * latencies[-1], 1) if latencies else None,
        }
    finally:
        for sock in sockets:
            sock.close()
        if proxy:
            proxy.stop()
        if server:
            server.stop()
        shutil.rmtree(folder, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.dos", description=__doc__)
    parser.add_argument("--case", help=argparse.SUPPRESS)
    parser.add_argument("--only", action="append", help="case names (default: all)")
    parser.add_argument("--cap", type=float, default=150.0, help="seconds per in-process case")
    parser.add_argument("--http", action="store_true", help="also the gunicorn cases")
    parser.add_argument("--json", type=Path, help="write the results here too")
    args = parser.parse_args(argv)
    if args.case:
        print(json.dumps(run_case(args.case)))
        return 0
    results = []
    for case in CASES:
        if args.only and case.name not in args.only:
            continue
        result = measure_case(case.name, args.cap)
        result["before (issue)"] = case.before
        results.append(result)
        print(json.dumps(result), flush=True)
    if args.http:
        for run in (
            batch_with_dns_down,
            slowloris,
            lambda: slowloris(via_nginx=True),
        ):
            try:
                result = run()
            except Exception as exc:  # noqa: BLE001 - report and go on to the next case
                result = {"case": getattr(run, "__name__", "http"), "error": str(exc)}
            results.append(result)
            print(json.dumps(result), flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
