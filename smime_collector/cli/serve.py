"""``smime-collector serve``: gunicorn with the package's settings, after checking them."""

from __future__ import annotations

import argparse

from smime_collector import serve

HELP = "serve the web intake and operator routes with gunicorn"
DESCRIPTION = (
    "Check the server's environment, then become gunicorn with the package's settings "
    "(BIND, WEB_CONCURRENCY, TLS_CERT/TLS_KEY, ACCESS_LOG, GUNICORN_TIMEOUT, "
    "GUNICORN_WORKER_CLASS, GUNICORN_THREADS; the service's own keys come from $WEBAPP_INI, "
    "default ./webapp.ini, and SMIME_COLLECTOR_* variables)."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "gunicorn_args",
        nargs=argparse.REMAINDER,
        metavar="GUNICORN-ARG",
        help="extra gunicorn options, after --",
    )


def run(args: argparse.Namespace) -> int:
    extra = list(args.gunicorn_args)
    if extra[:1] == ["--"]:
        extra = extra[1:]
    return serve.main(extra)
