"""What the subcommands share: exit codes, the arguments every one of them takes, and how a
command that judges opens the pipeline."""

from __future__ import annotations

import argparse
import sys

from smime_collector import __version__, logsetup
from smime_collector.checkconfig import load
from smime_collector.config import ConfigError, Settings
from smime_collector.pipeline import Collector
from smime_collector.trust import TrustError

EXIT_OK, EXIT_REJECTED, EXIT_USAGE, EXIT_TEMPFAIL = 0, 1, 2, 75


def add_config_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config", metavar="FILE", help="INI file (default: $WEBAPP_INI or ./webapp.ini)"
    )


def add_version_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")


def load_configured(
    config: str | None, entry: str, prog: str
) -> tuple[Settings, logsetup.LogSink] | None:
    """The configuration ``config`` names, its log attached as ``entry``; ``None`` once the
    reason it cannot be loaded is on standard error (exit :data:`EXIT_USAGE`)."""
    try:
        settings = load(config)
        return settings, logsetup.attach(
            entry, settings.log_file, settings.log_level, settings.log_format
        )
    except (ConfigError, OSError) as exc:
        print(f"{prog}: configuration error: {exc}", file=sys.stderr)
        return None


def open_collector(
    config: str | None, entry: str, prog: str
) -> tuple[Collector, logsetup.LogSink] | None:
    """:func:`load_configured`, then the pipeline for that configuration (``None`` likewise)."""
    loaded = load_configured(config, entry, prog)
    if loaded is None:
        return None
    settings, sink = loaded
    try:
        return Collector.build(settings, sink), sink
    except (ConfigError, TrustError, OSError) as exc:
        print(f"{prog}: configuration error: {exc}", file=sys.stderr)
        return None
