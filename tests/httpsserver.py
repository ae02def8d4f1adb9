"""A real HTTPS server on 127.0.0.1 for the SNS tests: ``python -m tests.httpsserver``.

Serves the files of ``--folder`` (the SNS signing certificate) over TLS with ``--cert`` and
``--key``, answers any other GET (a SubscribeURL) with SNS's short confirmation document, and
appends every request line to ``--requests``. Prints ``PORT <n>`` once it listens; stopped by
pid with SIGTERM.
"""

from __future__ import annotations

import argparse
import http.server
import ssl
import sys
from pathlib import Path


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
