"""Slowloris against the supported shape: nginx (``contrib/nginx/smime-collector.conf``) in front
of gunicorn's two sync workers, as ``make run`` starts them.

Four clients trickling header bytes starved both sync workers when gunicorn faced the clients
itself. Behind nginx, which reads whole requests before it calls gunicorn, many more slow
clients cost gunicorn nothing: every legitimate request meanwhile is answered. How fast, and
the same load against bare gunicorn, is measured by ``bench/dos.py --http``.
"""

from __future__ import annotations

import json
import socket
import time
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import write_ini
from tests.helpers import TOKEN_HEADER
from tests.nginx import nginx_binary, start_nginx
from tests.servers import start_gunicorn

pytestmark = pytest.mark.slow
SLOW_CLIENTS = 32
ROUNDS = 8


def test_slow_clients_do_not_starve_gunicorn_behind_nginx(tmp_path: Path, dns) -> None:
    if nginx_binary() is None:
        pytest.fail("nginx is not installed: `make test` installs nginx-light (apt-get)")
    ini = write_ini(
        tmp_path / "webapp.ini",
        {
            "x-messagesystems-webhook-token": "test-token",
            "user-certs-dir": "certs",
            "log-file": "webapp.log",
            "dns-nameservers": dns.nameserver,
        },
    )
    server = start_gunicorn(ini, tmp_path, workers=2)
    proxy = None
    slow: list[socket.socket] = []
    try:
        proxy = start_nginx(tmp_path, server.url)
        port = int(proxy.url.rstrip("/").rsplit(":", 1)[1])
        for _ in range(SLOW_CLIENTS):
            sock = socket.create_connection(("127.0.0.1", port), timeout=5)
            sock.sendall(b"POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: applic")
            slow.append(sock)
        answered = []
        for _ in range(ROUNDS):
            for sock in slow:
                sock.sendall(b"a")  # one more byte each: never a whole request
            request = urllib.request.Request(
                proxy.url,
                data=b"[]",
                headers={"Content-Type": "application/json", TOKEN_HEADER: "test-token"},
            )
            with urllib.request.urlopen(request, timeout=5) as response:
                answered.append((response.status, json.loads(response.read())))
            time.sleep(0.5)
    finally:
        for sock in slow:
            sock.close()
        if proxy:
            proxy.stop()
        server.stop()
    assert answered == [(200, {"message": "OK", "count": 0})] * ROUNDS
