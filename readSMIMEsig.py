#!/usr/bin/env python3
"""Command-line twin of the webhook: judge saved ``.eml`` files with the same pipeline.

Exit codes: 0 all stored/unchanged, 1 any rejected, 75 any tempfail (EX_TEMPFAIL), 2 usage or
configuration error.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from datetime import UTC, datetime
from pathlib import Path

from smime_collector.config import ConfigError, Settings, load_settings
from smime_collector.logsetup import get_logger
from smime_collector.pipeline import Collector
from smime_collector.trust import TrustError
from smime_collector.verdict import Outcome, Verdict

EXIT_OK, EXIT_REJECTED, EXIT_USAGE, EXIT_TEMPFAIL = 0, 1, 2, 75


def read_smime_email(
    raw: bytes, collector: Collector, received_at: datetime | None = None
) -> Verdict:
    """The pipeline entry: judge one raw message and store the certificate when it passes."""
    return collector.read_smime_email(raw, received_at)


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
        description="Collect S/MIME certificates from signed .eml files (DKIM + S/MIME checks).",
        epilog="Exit: 0 all stored/unchanged, 1 any rejected, 75 any tempfail, 2 usage/config.",
    )
    parser.add_argument(
        "--config",
        metavar="FILE",
        help="INI file (default: $WEBAPP_INI or ./webapp.ini)",
    )
    parser.add_argument("--json", action="store_true", help="one JSON object per file on stdout")
    parser.add_argument("files", nargs="+", metavar="EMLFILE", help="message files to read")
    return parser


def load(config: str | None) -> Settings:
    """``--config``, else $WEBAPP_INI, else ./webapp.ini; built-in defaults when none exists."""
    if config is None and "WEBAPP_INI" not in os.environ and not Path("webapp.ini").exists():
        return Settings.from_mapping({})
    return load_settings(config)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = load(args.config)
        collector = Collector.build(
            settings, get_logger("readSMIMEsig", settings.log_file, settings.log_level)
        )
    except (ConfigError, TrustError, OSError) as exc:
        print(f"readSMIMEsig.py: configuration error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    verdicts = []
    for name in args.files:
        verdict = judge_file(collector, Path(name))
        verdicts.append(verdict)
        report(name, verdict, args.json)
    return exit_code(verdicts)


def judge_file(collector: Collector, path: Path) -> Verdict:
    collector.log.info("File %s", path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        return Verdict(
            Outcome.REJECTED,
            "malformed",
            None,
            None,
            f"cannot read file: {exc.strerror}",
        )
    return read_smime_email(raw, collector, datetime.now(UTC))


def report(name: str, verdict: Verdict, as_json: bool) -> None:
    if as_json:
        print(json.dumps({"file": name, **verdict.as_dict()}), flush=True)
        return
    line = f"{name}: {verdict.outcome.value} ({verdict.reason})"
    if verdict.email:
        line += f" {verdict.email}"
    if verdict.path:
        line += f" -> {verdict.path}"
    elif verdict.detail:
        line += f": {verdict.detail}"
    print(line, flush=True)


if __name__ == "__main__":
    sys.exit(main())
