"""``python -m smime_collector.serve``: check the settings, then become gunicorn.

gunicorn reads some of its environment (``WEB_CONCURRENCY``) while importing itself, and
answers a bad value with a traceback. Checking everything first, then ``exec``-ing gunicorn with
``gunicorn.conf.py``, gives one clear line instead, and keeps the process id, so systemd and
the tests stop the real server by pid.
"""

from __future__ import annotations

import os
import sys

from smime_collector.config import REPO_DIR, ConfigError
from smime_collector.serving import server_options

GUNICORN_CONF = REPO_DIR / "gunicorn.conf.py"
APP = "webapp:app"


def main(argv: list[str] | None = None) -> int:
    """Validate the server's environment, then replace this process with gunicorn; extra
    arguments are passed to gunicorn."""
    try:
        server_options(os.environ)
    except ConfigError as exc:
        print(f"smime-collector: configuration error: {exc}", file=sys.stderr)
        return 2
    args = [sys.executable, "-m", "gunicorn", "-c", str(GUNICORN_CONF), *(argv or []), APP]
    os.chdir(REPO_DIR)  # gunicorn imports ``webapp`` from here
    os.execv(sys.executable, args)
    return 0  # pragma: no cover - execv does not return


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
