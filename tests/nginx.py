"""Start and stop a real nginx running ``contrib/nginx/smime-collector.conf`` (127.0.0.1 only).

The shipped server block is used as it is, except what a test cannot have: its TLS lines (the
``listen 443 ssl`` becomes a free plain port on 127.0.0.1, the certificate lines go) and the
upstream address (the gunicorn the test started). Everything that bounds slow clients stays.
nginx runs in the foreground (``daemon off``) with its files in the test's folder, and is
stopped by pid.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from tests.paths import REPO
from tests.servers import free_port, stop_process

SHIPPED = REPO / "contrib" / "nginx" / "smime-collector.conf"


def nginx_binary() -> str | None:
    return shutil.which("nginx") or next(
        (p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx") if Path(p).exists()), None
    )


@dataclass
class Nginx:
    process: subprocess.Popen
    url: str
    folder: Path

    def stop(self) -> None:
        stop_process(self.process, 20)


def server_block(upstream: str, port: int) -> str:
    """The shipped configuration, pointed at ``upstream`` (host:port), on a plain port."""
    text = SHIPPED.read_text(encoding="utf-8")
    text, listens = re.subn(r"listen 443 ssl;", f"listen 127.0.0.1:{port};", text)
    text, upstreams = re.subn(r"server 127\.0\.0\.1:8855;", f"server {upstream};", text)
    text = re.sub(r"(?m)^\s*ssl_certificate(_key)?\s.*\n", "", text)
    if (listens, upstreams) != (1, 1):
        raise RuntimeError(f"{SHIPPED} no longer has the lines this helper adapts")
    return text


def start_nginx(folder: Path, upstream_url: str) -> Nginx:
    binary = nginx_binary()
    if binary is None:
        raise RuntimeError("nginx is not installed (make test installs nginx-light)")
    folder = folder / "nginx"
    for sub in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    port = free_port()
    upstream = upstream_url.split("//", 1)[1].rstrip("/")
    (folder / "smime-collector.conf").write_text(server_block(upstream, port), encoding="utf-8")
    user = "user root;\n" if os.geteuid() == 0 else ""  # workers must reach the temp folders
    temp = "".join(f"    {sub}_temp_path {folder / sub};\n" for sub in ("fastcgi", "uwsgi", "scgi"))
    (folder / "nginx.conf").write_text(
        f"daemon off;\n{user}worker_processes 1;\npid {folder / 'nginx.pid'};\n"
        f"error_log {folder / 'error.log'} warn;\n"
        "events { worker_connections 512; }\n"
        "http {\n"
        f"    access_log {folder / 'access.log'};\n"
        f"    client_body_temp_path {folder / 'client_body'};\n"
        f"    proxy_temp_path {folder / 'proxy'};\n"
        f"{temp}"
        f"    include {folder / 'smime-collector.conf'};\n"
        "}\n",
        encoding="utf-8",
    )
    process = subprocess.Popen(
        [binary, "-p", str(folder), "-c", str(folder / "nginx.conf")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    proxy = Nginx(process, f"http://127.0.0.1:{port}/", folder)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"nginx exited: {process.stderr.read().decode(errors='replace')}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return proxy
        except OSError:
            time.sleep(0.05)
    proxy.stop()
    raise RuntimeError("nginx did not listen within 15 s")
