"""``smime-collector serve`` (and ``python -m smime_collector.serve``): check, then become gunicorn.

gunicorn reads some of its environment (``WEB_CONCURRENCY``) while importing itself, and
answers a bad value with a traceback. Checking everything first, then ``exec``-ing gunicorn with
the package's settings module, gives one clear line instead, and keeps the process id, so
systemd and the tests stop the real server by pid. Nothing here depends on a checkout: the
settings module and the app are imported from the installed package.
"""

from __future__ import annotations

import os
import sys

from smime_collector.config import ConfigError
from smime_collector.resources import GUNICORN_CONF_MODULE, WSGI_APP
from smime_collector.serving import server_options


def gunicorn_command(extra: list[str] | None = None) -> list[str]:
    """The gunicorn command line ``serve`` runs; ``extra`` arguments go to gunicorn."""
    return [
        sys.executable,
        "-m",
        "gunicorn",
        "-c",
        f"python:{GUNICORN_CONF_MODULE}",
        *(extra or []),
        WSGI_APP,
    ]


def main(argv: list[str] | None = None) -> int:
    """Validate the server's environment, then replace this process with gunicorn; extra
    arguments are passed to gunicorn."""
    try:
        server_options(os.environ)
    except ConfigError as exc:
        print(f"smime-collector: configuration error: {exc}", file=sys.stderr)
        return 2
    args = gunicorn_command(argv)
    os.execv(args[0], args)
    return 0  # pragma: no cover - execv does not return


if __name__ == "__main__":
    if sys.argv[1:] == ["--version"]:
        # Ours, like every other command's, rather than gunicorn's.
        from smime_collector import __version__

        print(f"smime-collector serve {__version__}")
        sys.exit(0)
    sys.exit(main(sys.argv[1:]))
