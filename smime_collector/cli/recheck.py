"""``smime-collector recheck`` (and ``readSMIMEsig.py --recheck``): every stored certificate
validated again as of now, path and revocation; revoked ones move to the history."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from datetime import UTC, datetime
from typing import TextIO

from smime_collector import recheck
from smime_collector.cli.common import (
    EXIT_TEMPFAIL,
    EXIT_USAGE,
    add_config_argument,
    open_collector,
)
from smime_collector.store import StoreUnavailable

HELP = "validate every stored certificate again as of now; move revoked ones to the history"
EPILOG = "Exit: 0 all valid, 1 any revoked or expired, 75 a check a retry could settle, 2 config."
log = logging.getLogger("smime_collector.cli")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_argument(parser)
    parser.add_argument("--json", action="store_true", help="one JSON object per certificate")


def run(args: argparse.Namespace) -> int:
    return run_recheck(args.config, args.json, sys.stdout, args.prog, "recheck")


def run_recheck(config: str | None, as_json: bool, out: TextIO, prog: str, entry: str) -> int:
    """Every stored certificate, one line (or JSON object) each; see :mod:`recheck`."""
    opened = open_collector(config, entry, prog)
    if opened is None:
        return EXIT_USAGE
    collector, sink = opened
    with sink.context():
        log.info("Recheck of %s", collector.store.location("*"))
        try:
            results = recheck.recheck_all(
                collector.store,
                collector.anchors.current(),
                collector.revocation,
                collector.settings.allow_sha1,
                datetime.now(UTC),
            )
        except StoreUnavailable as exc:
            print(f"{prog}: store unavailable, run it again: {exc}", file=out)
            return EXIT_TEMPFAIL
        finally:
            collector.store.close()
    for result in results:
        if as_json:
            print(json.dumps(result.as_dict()), file=out, flush=True)
        else:
            print(f"{result.email}: {result.state} ({result.detail})", file=out, flush=True)
    return recheck.exit_code(results)
