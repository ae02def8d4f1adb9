"""What the subcommands share: exit codes and the arguments every one of them takes."""

from __future__ import annotations

import argparse

from smime_collector import __version__

EXIT_OK, EXIT_REJECTED, EXIT_USAGE, EXIT_TEMPFAIL = 0, 1, 2, 75


def add_config_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config", metavar="FILE", help="INI file (default: $WEBAPP_INI or ./webapp.ini)"
    )


def add_version_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
