"""``smime-collector import DIR`` (and ``readSMIMEsig.py --import DIR``): a certificate folder
loaded into the configured store under the same supersede rule; see
``smime_collector/store/transfer.py``."""

from __future__ import annotations

import argparse

from smime_collector.cli import transfer

HELP = "load the certificate folder DIR into the configured store (newer certificates win)"
EPILOG = transfer.EPILOG


def add_arguments(parser: argparse.ArgumentParser) -> None:
    transfer.add_arguments(parser, "the folder to read")


def run(args: argparse.Namespace) -> int:
    return transfer.command(args.config, None, args.directory, args.json, args.prog)
