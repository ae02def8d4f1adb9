"""``smime-collector``: one console command, a subcommand per job.

Each subcommand is a module of this package with ``HELP`` (one line), ``add_arguments(parser)``
and ``run(args) -> exit code``, and is a thin wrapper over a library function: the seed's
``readSMIMEsig.py`` and ``python -m`` entry points call the same functions. :data:`COMMANDS`
lists them in the order ``--help`` shows them; a command whose module is not in this package
is left out, so commands still being built elsewhere appear the day their module lands, with no
other change here. Every command and the top level answer ``--version``.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import sys
from types import ModuleType

from smime_collector import __version__

PROG = "smime-collector"

#: Subcommand name → module. ``recheck``, ``export``, ``import`` and ``smtpd`` are registered
#: when their modules exist (re-judging stored certificates, moving between stores, and the
#: SMTP/LMTP intake are being built as library code of their own).
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
    """The subcommands whose modules are present, imported."""
    found = {}
    for name, module in COMMANDS.items():
        if importlib.util.find_spec(module) is not None:
            found[name] = importlib.import_module(module)
    return found


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Collect people's S/MIME certificates from one signed email.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, module in available().items():
        sub = commands.add_parser(
            name,
            help=module.HELP,
            description=getattr(module, "DESCRIPTION", module.HELP),
            epilog=getattr(module, "EPILOG", None),
        )
        sub.add_argument("--version", action="version", version=f"{PROG} {name} {__version__}")
        module.add_arguments(sub)
        sub.set_defaults(run=module.run, prog=f"{PROG} {name}")
    return parser


def main(argv: list[str] | None = None) -> int:
    """The console command: parse, then run the chosen subcommand."""
    args = build_parser().parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
