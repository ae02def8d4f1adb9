"""What ``export`` and ``import`` share (``smime-collector export|import DIR``, and
``readSMIMEsig.py --export|--import DIR``): load the configuration, copy, print one summary
line (or one JSON object), answer the exit code. The copying is
``smime_collector/store/transfer.py``."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from smime_collector.cli.common import (
    EXIT_OK,
    EXIT_REJECTED,
    EXIT_TEMPFAIL,
    EXIT_USAGE,
    add_config_argument,
    load_configured,
)
from smime_collector.config import ConfigError
from smime_collector.store import StoreUnavailable, open_store
from smime_collector.store.transfer import export_to, import_from

EPILOG = (
    "Exit: 0 done, 1 some addresses could not be held by the target (each on a 'skipped' "
    "line), 75 a store failed (run it again: nothing is lost), 2 usage or configuration."
)


def add_arguments(parser: argparse.ArgumentParser, directory_help: str) -> None:
    """The arguments of ``export`` and ``import``: the configuration, ``--json`` and the
    certificate folder ``DIR`` (``directory_help`` says which way it goes)."""
    add_config_argument(parser)
    parser.add_argument("--json", action="store_true", help="the summary as one JSON object")
    parser.add_argument("directory", metavar="DIR", type=Path, help=directory_help)


def command(
    config: str | None, export_dir: Path | None, import_dir: Path | None, as_json: bool, prog: str
) -> int:
    """Export the configured store to ``export_dir``, or import ``import_dir`` into it."""
    loaded = load_configured(config, "transfer", prog)
    if loaded is None:
        return EXIT_USAGE
    store = open_store(loaded[0])
    out = sys.stdout
    try:
        store.prepare()
        if export_dir is not None:
            report = export_to(store, export_dir)
        else:
            assert import_dir is not None
            report = import_from(import_dir, store)
    except FileNotFoundError as exc:
        print(f"{prog}: {exc}", file=out)
        return EXIT_USAGE
    except ConfigError as exc:
        print(f"{prog}: configuration error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except (StoreUnavailable, OSError) as exc:
        print(f"{prog}: store unavailable, nothing lost, run it again: {exc}", file=out)
        return EXIT_TEMPFAIL
    finally:
        store.close()
    if as_json:
        print(json.dumps(report.as_dict()), file=out)
    else:
        verb = "exported" if export_dir is not None else "imported"
        print(f"{verb} {report.summary()}", file=out)
        for address, why in report.skipped:
            print(f"skipped {address}: {why}", file=out)
    return EXIT_OK if report.complete else EXIT_REJECTED
