"""A small HTTP server for CRLs, run by the tests as a subprocess on 127.0.0.1 and stopped by pid.

``python tests/crlserver.py FOLDER PORTFILE`` serves ``FOLDER/<name>`` and writes the port it
bound into ``PORTFILE``. Every request is appended to ``FOLDER/requests.log``. A few paths
misbehave on purpose, as servers in the wild do:

- ``/redirect/<name>`` answers 302 to ``/<name>`` on the same server;
- ``/status/<code>`` answers that status;
- ``/hang`` reads the request and never answers.
"""

from __future__ import annotations

import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

FOLDER = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(".")
HANG = threading.Event()  # never set: /hang waits until the process is stopped


class Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        with (FOLDER / "requests.log").open("a", encoding="utf-8") as log:
            log.write(self.path + "\n")
        if self.path == "/hang":
            HANG.wait()
            return
        if self.path.startswith("/redirect/"):
            self.send_response(302)
            self.send_header("Location", "/" + self.path.removeprefix("/redirect/"))
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        if self.path.startswith("/status/"):
            self.send_response(int(self.path.removeprefix("/status/")))
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        target = FOLDER / self.path.lstrip("/")
        if "/" in self.path.lstrip("/") or not target.is_file():
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        body = target.read_bytes()
        self.send_response(200)
        self.send_header("Content-Type", "application/pkix-crl")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


def main() -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    port_file = Path(sys.argv[2])
    port_file.with_suffix(".tmp").write_text(str(server.server_address[1]))
    port_file.with_suffix(".tmp").rename(port_file)
    server.serve_forever()


if __name__ == "__main__":
    main()
