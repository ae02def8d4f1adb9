"""``smime-collector smtpd [--config FILE]`` (``python -m smime_collector.smtpd``): the SMTP
or LMTP door as a service.

Reads the same configuration as the web service (``--config``, else ``$WEBAPP_INI``, else
``./webapp.ini``), logs to its ``log-file`` as ``smtpd``, listens on ``smtp-listen`` and serves
until SIGTERM (or SIGINT), which lets a message being judged finish and get its reply. Exit 0
after a clean stop, 2 for a configuration error or an address it cannot listen on.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import ssl
import sys

from smime_collector import __version__, logsetup
from smime_collector.config import ConfigError, Settings, load_settings
from smime_collector.intake.smtpd import Server
from smime_collector.pipeline import Collector
from smime_collector.trust import TrustError

EXIT_OK, EXIT_CONFIG = 0, 2

log = logging.getLogger("smime_collector.smtpd")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m smime_collector.smtpd",
        description="Serve SMTP or LMTP (smtp-protocol) on smtp-listen; judge each message "
        "after DATA and answer with its verdict.",
    )
    parser.add_argument(
        "--config", metavar="FILE", help="INI file (default: $WEBAPP_INI or ./webapp.ini)"
    )
    parser.add_argument(
        "--version", action="version", version=f"smime-collector smtpd {__version__}"
    )
    args = parser.parse_args(argv)
    return run(args.config)


def run(config: str | None) -> int:
    """Serve with the configuration ``config`` names until SIGTERM; the exit code."""
    try:
        settings = load_settings(config)
        sink = logsetup.attach("smtpd", settings.log_file, settings.log_level, settings.log_format)
        collector = Collector.build(settings, sink)
        server = Server(collector, settings)
    except (ConfigError, TrustError, OSError, ssl.SSLError) as exc:
        print(f"smime-collector smtpd: configuration error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    return asyncio.run(serve(server, settings, sink))


async def serve(server: Server, settings: Settings, sink: logsetup.LogSink) -> int:
    host, port = settings.smtp_listen
    try:
        await server.start()
    except OSError as exc:
        print(
            f"smime-collector smtpd: smtp-listen: cannot listen on {host}:{port}: "
            f"{exc.strerror or exc}",
            file=sys.stderr,
        )
        return EXIT_CONFIG
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stopping.set)
    await stopping.wait()
    with sink.context("shutdown"):
        log.info("stopping: judgements under way finish first")
        await server.stop()
        log.info("stopped")
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
