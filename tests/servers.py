"""Start and stop real gunicorn for end-to-end tests (127.0.0.1 only, stopped by pid)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from tests.paths import REPO


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def stop_process(
    process: subprocess.Popen, timeout: float, sig: signal.Signals = signal.SIGTERM
) -> None:
    """Stop a program a test started, by its pid: ``sig``, then SIGKILL if it is still there
    after ``timeout`` seconds. A program that has already ended is left as it is."""
    if process.poll() is not None:
        return
    process.send_signal(sig)
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@dataclass
class Gunicorn:
    process: subprocess.Popen
    url: str
    log: Path

    def stop(self) -> None:
        stop_process(self.process, 20)


def gunicorn_env(ini: Path, port: int, workers: int, folder: Path) -> dict[str, str]:
    return {
        **os.environ,
        "WEBAPP_INI": str(ini),
        "BIND": f"127.0.0.1:{port}",
        "WEB_CONCURRENCY": str(workers),
        "ACCESS_LOG": str(folder / "access.log"),
        "ERROR_LOG": str(folder / "gunicorn.log"),
    }


def start_gunicorn(
    ini: Path,
    folder: Path,
    workers: int = 2,
    extra: tuple[str, ...] = (),
    env: dict[str, str] | None = None,
) -> Gunicorn:
    """Run ``python -m smime_collector.serve`` (gunicorn with ``gunicorn.conf.py``) from the
    repo, as ``make run`` does; ``extra`` arguments go to gunicorn."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "smime_collector.serve", *extra],
        cwd=REPO,
        env={**gunicorn_env(ini, port, workers, folder), **(env or {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    server = Gunicorn(process, f"http://127.0.0.1:{port}/", folder / "gunicorn.log")
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            output = process.stdout.read().decode(errors="replace")
            raise RuntimeError(f"gunicorn exited with {process.returncode}: {output}")
        try:
            urllib.request.urlopen(server.url + "nonexistent", timeout=1)
        except urllib.error.HTTPError:
            return server  # any HTTP answer means a worker is serving
        except OSError:
            time.sleep(0.1)
    server.stop()
    raise RuntimeError("gunicorn did not answer within 30 s")
