"""``smime-collector check-config``: the operator's pre-flight check, one line per check."""

from __future__ import annotations

import argparse
import sys

from smime_collector.checkconfig import check_config
from smime_collector.cli.common import add_config_argument

HELP = "check the configuration, trust anchors, store, log and DNS, then exit"
EPILOG = "Exit: 0 when every check passes (WARN lines do not fail), 2 otherwise."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_argument(parser)


def run(args: argparse.Namespace) -> int:
    return check_config(args.config, sys.stdout)
