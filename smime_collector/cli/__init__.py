"""``smime-collector``: one console command, a subcommand per job.

Each subcommand is a module of this package with ``HELP`` (one line), ``add_arguments(parser)``
and ``run(args) -> exit code``, and is a thin wrapper over a library function: the seed's
``readSMIMEsig.py`` and ``python -m`` entry points call the same functions. :data:`COMMANDS`
lists them in the order ``--help`` shows them. Every command and the top level answer ``--version``.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from types import ModuleType

from smime_collector.cli.common import add_version_argument

PROG = "smime-collector"

#: Subcommand name → module.
COMMANDS: dict[str, str] = {
    "serve": "smime_collector.cli.serve",
    "judge": "smime_collector.cli.judge",
    "check-config": "smime_collector.cli.check_config",
    "recheck": "smime_collector.cli.recheck",
    "export": "smime_collector.cli.export",
    "import": "smime_collector.cli.import_",
    "smtpd": "smime_collector.cli.smtpd",
}


def available() -> dict[str, ModuleType]:
    """Every subcommand's module, imported."""
    return {name: importlib.import_module(module) for name, module in COMMANDS.items()}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Collect people's S/MIME certificates from one signed email.",
    )
    add_version_argument(parser)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, module in available().items():
        sub = commands.add_parser(
            name,
            help=module.HELP,
            description=getattr(module, "DESCRIPTION", module.HELP),
            epilog=getattr(module, "EPILOG", None),
        )
        add_version_argument(sub)  # %(prog)s is "smime-collector <name>" here
        module.add_arguments(sub)
        sub.set_defaults(run=module.run, prog=f"{PROG} {name}")
    return parser


def main(argv: list[str] | None = None) -> int:
    """The console command: parse, then run the chosen subcommand."""
    args = build_parser().parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
