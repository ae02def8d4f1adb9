"""``smime-collector judge`` and the seed's ``readSMIMEsig.py``: judge saved mail.

The command-line twin of the webhook, with the same pipeline. Takes ``.eml`` files, folders of
them, mbox files and Maildir folders. Exit codes: 0 all stored/unchanged, 1 any rejected, 75 any
tempfail (EX_TEMPFAIL), 2 usage or configuration error. ``readSMIMEsig.py --recheck`` validates
the stored certificates again (``smime-collector recheck``; exit 0 / 1 revoked or expired / 75).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import sys
from collections import Counter
from datetime import datetime
from pathlib import Path
from typing import TextIO

from smime_collector.checkconfig import check_config
from smime_collector.cli import transfer
from smime_collector.cli.common import (
    EXIT_OK,
    EXIT_REJECTED,
    EXIT_TEMPFAIL,
    EXIT_USAGE,
    add_config_argument,
    add_version_argument,
    open_collector,
)
from smime_collector.cli.recheck import run_recheck
from smime_collector.harvest import Source, collect
from smime_collector.intake import pipe
from smime_collector.pipeline import Collector
from smime_collector.verdict import Outcome, Reason, Verdict

INTAKE = "cli"
HELP = "judge saved mail: .eml files, folders, mbox files and Maildir folders"
log = logging.getLogger("smime_collector.cli")

DESCRIPTION = (
    "Collect S/MIME certificates from signed mail: .eml files, folders, mbox files and "
    "Maildir folders (DKIM + S/MIME checks)."
)
EPILOG = "Exit: 0 all stored/unchanged, 1 any rejected, 75 any tempfail, 2 usage/config."


def read_smime_email(
    raw: bytes, collector: Collector, received_at: datetime | None = None
) -> Verdict:
    """The pipeline entry: judge one raw message and store the certificate when it passes."""
    return collector.read_smime_email(raw, received_at, INTAKE)


def exit_code(verdicts: list[Verdict]) -> int:
    outcomes = {v.outcome for v in verdicts}
    if Outcome.TEMPFAIL in outcomes:
        return EXIT_TEMPFAIL
    if Outcome.REJECTED in outcomes:
        return EXIT_REJECTED
    return EXIT_OK


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``smime-collector judge``'s arguments."""
    add_config_argument(parser)
    parser.add_argument("--json", action="store_true", help="one JSON object per message")
    parser.add_argument("files", nargs="+", metavar="EMLFILE", help="files, folders, mbox, Maildir")


def run(args: argparse.Namespace) -> int:
    """``smime-collector judge``."""
    return judge_paths(args.files, args.config, args.json, args.prog, "judge")


def build_parser() -> argparse.ArgumentParser:
    """The seed's command line: judging is the default, ``--check-config`` a flag."""
    parser = argparse.ArgumentParser(prog="readSMIMEsig.py", description=DESCRIPTION, epilog=EPILOG)
    add_version_argument(parser)
    add_config_argument(parser)
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
    parser.add_argument(
        "--export",
        metavar="DIR",
        type=Path,
        help="write the configured store into DIR as a certificate folder, then exit",
    )
    parser.add_argument(
        "--import",
        dest="import_dir",
        metavar="DIR",
        type=Path,
        help="load the certificate folder DIR into the configured store, then exit",
    )
    parser.add_argument("files", nargs="*", metavar="EMLFILE", help="files, folders, mbox, Maildir")
    return parser


def main(argv: list[str] | None = None) -> int:
    """``readSMIMEsig.py``."""
    argv = sys.argv[1:] if argv is None else argv
    if "--pipe" in argv:  # Postfix's door: its own arguments, and exit 0 or 75 only
        return pipe.main(argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    modes = [
        name
        for name, given in (
            ("--check-config", args.check_config),
            ("--recheck", args.recheck),
            ("--export", args.export is not None),
            ("--import", args.import_dir is not None),
            ("EMLFILE", bool(args.files)),
        )
        if given
    ]
    if len(modes) > 1:  # running one and dropping the other would look like both were done
        parser.error(
            f"{' and '.join(modes)} exclude each other: give one of --check-config, --recheck, "
            "--export DIR, --import DIR, --pipe or EMLFILEs"
        )
    if args.check_config:
        return check_config(args.config, sys.stdout)
    if args.recheck:
        return run_recheck(args.config, args.json, sys.stdout, parser.prog, "readSMIMEsig")
    if args.export or args.import_dir:
        return transfer.command(args.config, args.export, args.import_dir, args.json, parser.prog)
    if not args.files:
        parser.error("give at least one EMLFILE, folder, mbox or Maildir (or --check-config)")
    return judge_paths(args.files, args.config, args.json, parser.prog, "readSMIMEsig")


def judge_paths(files: list[str], config: str | None, as_json: bool, prog: str, entry: str) -> int:
    """Judge every message found under ``files``, print one line (or JSON object) each and a
    summary, and return the exit code. ``entry`` names the program in the log."""
    opened = open_collector(config, entry, prog)
    if opened is None:
        return EXIT_USAGE
    collector, _ = opened
    sources = collect(files)
    if not sources:
        print(f"{prog}: no messages found", file=sys.stderr)
    interactive = sys.stderr.isatty() and sys.stdout.isatty() and not as_json
    progress = Progress(len(sources)) if interactive else None
    verdicts = []
    for source in sources:
        if progress:
            progress.show(source.name)
        verdict = judge(collector, source)
        verdicts.append(verdict)
        if progress:
            progress.clear()
        report(source.name, verdict, as_json)
    collector.store.close()
    if len(verdicts) > 1:
        summary(verdicts, sys.stderr if as_json else sys.stdout)
    return exit_code(verdicts)


def judge(collector: Collector, source: Source) -> Verdict:
    sink = collector.sink
    with sink.context() if sink else contextlib.nullcontext():
        log.info("File %s", source.name)
        try:
            raw = source.read()
        except (OSError, KeyError) as exc:
            detail = f"cannot read: {getattr(exc, 'strerror', None) or exc}"
            return Verdict(Outcome.REJECTED, Reason.MALFORMED, None, None, detail)
        return read_smime_email(raw, collector)


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
