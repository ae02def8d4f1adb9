"""A real HTTPS server on 127.0.0.1 for the SNS tests: ``python -m tests.httpsserver``.

Serves the files of ``--folder`` (the SNS signing certificate) over TLS with ``--cert`` and
``--key``, answers any other GET (a SubscribeURL) with SNS's short confirmation document, and
appends every request line to ``--requests``. Prints ``PORT <n>`` once it listens; stopped by
pid with SIGTERM.
"""

from __future__ import annotations

import argparse
import http.server
import re
import signal
import ssl
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from tests import pki
from tests.paths import REPO


@dataclass
class HTTPSServer:
    """The running server: its port, the folder it serves, the requests it saw, its CA."""

    process: subprocess.Popen
    port: int
    folder: Path
    requests: Path
    ca_file: Path
    root: pki.Identity

    @property
    def base(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def requested(self) -> list[str]:
        return self.requests.read_text().splitlines() if self.requests.exists() else []

    @classmethod
    def start(cls, folder: Path) -> HTTPSServer:
        from tests.intakes import server_identity

        root = pki.make_root("HTTPS Test CA")
        ca_file = folder / "ca.pem"
        ca_file.write_bytes(root.cert_pem())
        cert, key = server_identity(root).write(folder, "server")
        served = folder / "served"
        served.mkdir()
        requests = folder / "requests.log"
        process = subprocess.Popen(
            [sys.executable, "-m", "tests.httpsserver", "--cert", str(cert), "--key", str(key),
             "--folder", str(served), "--requests", str(requests)],
            cwd=REPO, stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        line = process.stdout.readline()
        match = re.match(r"PORT (\d+)", line)
        if not match:
            process.kill()
            raise RuntimeError(f"the HTTPS server did not start: {line!r}")
        return cls(process, int(match[1]), served, requests, ca_file, root)

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(timeout=10)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--cert", required=True)
    parser.add_argument("--key", required=True)
    parser.add_argument("--folder", required=True)
    parser.add_argument("--requests", required=True)
    args = parser.parse_args()
    folder = Path(args.folder)
    requests = Path(args.requests)

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            with requests.open("a", encoding="utf-8") as log:
                log.write(self.path + "\n")
            target = folder / self.path.lstrip("/").split("?", 1)[0]
            if "?" not in self.path and target.is_file():
                body, kind = target.read_bytes(), "application/x-pem-file"
            elif "?" in self.path:
                body, kind = b"<ConfirmSubscriptionResponse/>", "text/xml"
            else:
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(args.cert, args.key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    print(f"PORT {server.server_address[1]}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    sys.exit(main())
