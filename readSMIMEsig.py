#!/usr/bin/env python3
"""Command-line twin of the webhook: judge saved mail with the same pipeline.

Takes ``.eml`` files, folders of them, mbox files and Maildir folders. Exit codes: 0 all
stored/unchanged, 1 any rejected, 75 any tempfail (EX_TEMPFAIL), 2 usage or configuration error.
``--recheck`` validates the stored certificates again (exit 0 / 1 revoked or expired / 75).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import sys
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import TextIO

from smime_collector import logsetup, recheck
from smime_collector.config import ConfigError, Settings, load_settings
from smime_collector.delivery import Delivery
from smime_collector.dnskeys import DNSTempError, KeyResolver
from smime_collector.harvest import Source, collect
from smime_collector.intake import pipe
from smime_collector.pipeline import Collector
from smime_collector.store import open_store
from smime_collector.trust import TrustError, load_anchors
from smime_collector.verdict import Outcome, Reason, Verdict

INTAKE = "cli"
log = logging.getLogger("smime_collector.cli")

EXIT_OK, EXIT_REJECTED, EXIT_USAGE, EXIT_TEMPFAIL = 0, 1, 2, 75
CHECK_DNS_NAME = "example.com"


def read_smime_email(
    raw: bytes, collector: Collector, received_at: datetime | None = None
) -> Verdict:
    """The pipeline entry: judge one raw message and store the certificate when it passes."""
    return collector.judge(Delivery(raw, INTAKE, received_at or datetime.now(UTC)))


def exit_code(verdicts: list[Verdict]) -> int:
    outcomes = {v.outcome for v in verdicts}
    if Outcome.TEMPFAIL in outcomes:
        return EXIT_TEMPFAIL
    if Outcome.REJECTED in outcomes:
        return EXIT_REJECTED
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="readSMIMEsig.py",
        description="Collect S/MIME certificates from signed mail: .eml files, folders, "
        "mbox files and Maildir folders (DKIM + S/MIME checks).",
        epilog="Exit: 0 all stored/unchanged, 1 any rejected, 75 any tempfail, 2 usage/config.",
    )
    parser.add_argument(
        "--config", metavar="FILE", help="INI file (default: $WEBAPP_INI or ./webapp.ini)"
    )
    parser.add_argument("--json", action="store_true", help="one JSON object per message")
    parser.add_argument(
        "--recheck",
        action="store_true",
        help="validate every stored certificate again as of now (path and revocation); "
        "move revoked ones to .history/",
    )
    parser.add_argument(
        "--check-config",
        action="store_true",
        help="check the configuration, trust anchors, folders and DNS, then exit",
    )
    parser.add_argument(
        "--pipe",
        action="store_true",
        help="judge one message from standard input for Postfix's pipe(8), with --sender, "
        "--recipient and --deadline SECONDS (default 300); exits 0 or 75 only",
    )
    parser.add_argument("files", nargs="*", metavar="EMLFILE", help="files, folders, mbox, Maildir")
    return parser


def load(config: str | None) -> Settings:
    """``--config``, else $WEBAPP_INI, else ./webapp.ini; built-in defaults when none exists."""
    if config is None and "WEBAPP_INI" not in os.environ and not Path("webapp.ini").exists():
        return Settings.from_mapping({}, environ=os.environ)
    return load_settings(config)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if "--pipe" in argv:  # Postfix's door: its own arguments, and exit 0 or 75 only
        return pipe.main(argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.check_config:
        return check_config(args.config, sys.stdout)
    if args.recheck:
        return run_recheck(args.config, args.json, sys.stdout)
    if not args.files:
        parser.error("give at least one EMLFILE, folder, mbox or Maildir (or --check-config)")
    try:
        settings = load(args.config)
        sink = logsetup.attach(
            "readSMIMEsig", settings.log_file, settings.log_level, settings.log_format
        )
        collector = Collector.build(settings, sink)
    except (ConfigError, TrustError, OSError) as exc:
        print(f"readSMIMEsig.py: configuration error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    sources = collect(args.files)
    if not sources:
        print("readSMIMEsig.py: no messages found", file=sys.stderr)
    interactive = sys.stderr.isatty() and sys.stdout.isatty() and not args.json
    progress = Progress(len(sources)) if interactive else None
    verdicts = []
    for source in sources:
        if progress:
            progress.show(source.name)
        verdict = judge(collector, source)
        verdicts.append(verdict)
        if progress:
            progress.clear()
        report(source.name, verdict, args.json)
    if len(verdicts) > 1:
        summary(verdicts, sys.stderr if args.json else sys.stdout)
    return exit_code(verdicts)


def run_recheck(config: str | None, as_json: bool, out: TextIO) -> int:
    """Every stored certificate, one line (or JSON object) each; see :mod:`recheck`."""
    try:
        settings = load(config)
        sink = logsetup.attach(
            "readSMIMEsig", settings.log_file, settings.log_level, settings.log_format
        )
        collector = Collector.build(settings, sink)
    except (ConfigError, TrustError, OSError) as exc:
        print(f"readSMIMEsig.py: configuration error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    with sink.context():
        log.info("Recheck of %s", collector.store.location("*"))
        results = recheck.recheck_all(
            collector.store,
            collector.anchors.current(),
            collector.revocation,
            settings.allow_sha1,
            datetime.now(UTC),
        )
    for result in results:
        if as_json:
            print(json.dumps(result.as_dict()), file=out, flush=True)
        else:
            print(f"{result.email}: {result.state} ({result.detail})", file=out, flush=True)
    return recheck.exit_code(results)


def judge(collector: Collector, source: Source) -> Verdict:
    sink = collector.sink
    with sink.context() if sink else contextlib.nullcontext():
        log.info("File %s", source.name)
        try:
            raw = source.read()
        except (OSError, KeyError) as exc:
            detail = f"cannot read: {getattr(exc, 'strerror', None) or exc}"
            return Verdict(Outcome.REJECTED, Reason.MALFORMED, None, None, detail)
        return read_smime_email(raw, collector, datetime.now(UTC))


def report(name: str, verdict: Verdict, as_json: bool) -> None:
    if as_json:
        print(json.dumps({"file": name, **verdict.as_dict()}), flush=True)
        return
    line = f"{name}: {verdict.outcome.value} ({verdict.reason})"
    if verdict.email:
        line += f" {verdict.email}"
    if verdict.location:
        line += f" -> {verdict.location}"
    elif verdict.detail:
        line += f": {verdict.detail}"
    print(line, flush=True)


def summary(verdicts: list[Verdict], out: TextIO) -> None:
    """Count per outcome and reason, most frequent first."""
    counts = Counter((v.outcome.value, v.reason) for v in verdicts)
    print(f"\nSummary: {len(verdicts)} messages", file=out)
    print(f"  {'outcome':<10} {'reason':<18} {'count':>6}", file=out)
    for (outcome, reason), count in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])):
        print(f"  {outcome:<10} {reason:<18} {count:>6}", file=out)


class Progress:
    """A one-line progress bar on stderr, only when stderr is a terminal."""

    WIDTH = 30

    def __init__(self, total: int) -> None:
        self.total = max(total, 1)
        self.done = 0

    def show(self, name: str) -> None:
        filled = self.WIDTH * self.done // self.total
        bar = "#" * filled + "-" * (self.WIDTH - filled)
        sys.stderr.write(f"\r[{bar}] {self.done}/{self.total} {name[-40:]:<40}")
        sys.stderr.flush()
        self.done += 1

    def clear(self) -> None:
        sys.stderr.write("\r" + " " * (self.WIDTH + 60) + "\r")
        sys.stderr.flush()


def check_config(config: str | None, out: TextIO) -> int:
    """Say what is wrong with the configuration, one line per check; exit 0 only if all pass."""
    try:
        settings = load(config)
    except ConfigError as exc:
        print(f"FAIL config: {exc}", file=out)
        return EXIT_USAGE
    results = [("config", True, f"{settings.source} loaded")]
    try:
        anchors = load_anchors(list(settings.trusted_certs))
        results.append(("trusted-certs", True, f"{len(anchors)} trust anchors loaded"))
    except TrustError as exc:
        results.append(("trusted-certs", False, str(exc)))
    store = open_store(settings).health()  # the probe /healthz uses too
    results.append(("store", store.ok, store.detail))
    results.append(_check_log_writable(settings.log_file))
    results.append(_check_dns(settings))
    for key, ok, detail in results:
        print(f"{'ok' if ok else 'FAIL'} {key}: {detail}", file=out)
    for key, why in settings.risks():
        print(f"WARN {key}: {why}", file=out)
    return EXIT_OK if all(ok for _, ok, _ in results) else EXIT_USAGE


def _check_log_writable(path: Path | None) -> tuple[str, bool, str]:
    if path is None:
        return "log-file", True, "logging to standard error"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a"):
            pass
    except OSError as exc:
        return "log-file", False, f"{path} is not writable: {exc.strerror or exc}"
    return "log-file", True, f"{path} is writable"


def _check_dns(settings: Settings) -> tuple[str, bool, str]:
    servers = ", ".join(f"{h}:{p}" for h, p in settings.dns_nameservers) or "system resolver"
    resolver = KeyResolver(list(settings.dns_nameservers), settings.dns_timeout)
    try:
        answer = resolver.txt(CHECK_DNS_NAME)
    except DNSTempError as exc:
        return "dns-nameservers", False, f"{servers}: {exc}"
    what = "a TXT record" if answer is not None else "no TXT record (the server answered)"
    return "dns-nameservers", True, f"{servers} answered {CHECK_DNS_NAME} with {what}"


if __name__ == "__main__":
    sys.exit(main())
