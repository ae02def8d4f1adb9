"""``smime-collector smtpd``: the SMTP or LMTP door as a service (``smime_collector.smtpd``)."""

from __future__ import annotations

import argparse

from smime_collector import smtpd
from smime_collector.cli.common import add_config_argument

HELP = "serve SMTP or LMTP (smtp-protocol) on smtp-listen, for a Postfix or Exim relay"
EPILOG = "Stops cleanly on SIGTERM. Exit 0 after a clean stop, 2 for a configuration error."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_argument(parser)


def run(args: argparse.Namespace) -> int:
    return smtpd.run(args.config)
