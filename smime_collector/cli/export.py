"""``smime-collector export DIR`` (and ``readSMIMEsig.py --export DIR``): the configured store
written as a certificate folder, ``<address>.crt`` plus ``.history/``; see
``smime_collector/store/transfer.py``."""

from __future__ import annotations

import argparse

from smime_collector.cli import transfer

HELP = "write the configured store into DIR as a certificate folder (<address>.crt, .history/)"
EPILOG = transfer.EPILOG


def add_arguments(parser: argparse.ArgumentParser) -> None:
    transfer.add_arguments(parser, "the folder to write")


def run(args: argparse.Namespace) -> int:
    return transfer.command(args.config, args.directory, None, args.json, args.prog)
