"""HTTP load: real gunicorn on 127.0.0.1 and a concurrent HTTP/1.1 client on asyncio streams.

Each client keeps its connection open while the server allows it (gunicorn's sync workers
answer ``Connection: close``, so those clients reconnect; connecting is part of the latency).
A run stops after ``max_requests`` or ``max_seconds``, whichever comes first; every answer other
than 200, and every connection failure or timeout, is an error.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from bench import BenchError
from bench.corpus import BenchMessage
from bench.procfs import children, cpu_seconds
from bench.workspace import TOKEN
from tests.helpers import relay_event
from tests.servers import Gunicorn, start_gunicorn

REQUEST_TIMEOUT = 30.0
TOKEN_HEADER = "X-MessageSystems-Webhook-Token"


@dataclass
class LoadResult:
    concurrency: int
    batch: int
    seconds: float = 0.0
    latencies: list[float] = field(default_factory=list)
    statuses: Counter[str] = field(default_factory=Counter)
    errors: int = 0
    first_error: str = ""
    server_cpu: float = float("nan")  # CPU seconds the server processes used during the run
    client_cpu: float = float("nan")  # CPU seconds this load generator used (same machine)

    @property
    def requests(self) -> int:
        return len(self.latencies)

    @property
    def messages(self) -> int:
        return self.requests * self.batch

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    @property
    def per_message(self) -> float:
        """Wall seconds per message with the server saturated by the clients."""
        return self.seconds / self.messages if self.messages else float("nan")

    @property
    def cpu_per_message(self) -> float:
        """Server CPU seconds (all workers and the master) per message judged."""
        return self.server_cpu / self.messages if self.messages else float("nan")

    def percentile(self, q: float) -> float:
        """Nearest-rank percentile of the request latencies, in seconds."""
        if not self.latencies:
            return float("nan")
        ordered = sorted(self.latencies)
        return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]

    def error(self, text: str) -> None:
        self.errors += 1
        if not self.first_error:
            self.first_error = text


def batch_body(messages: Sequence[BenchMessage]) -> bytes:
    """A SparkPost relay batch (JSON array of relay events), as the relay sends it."""
    events = [relay_event(m.raw, msg_from=m.address) for m in messages]
    return json.dumps(events).encode("utf-8")


def batch_bodies(messages: Sequence[BenchMessage], batch: int, count: int) -> list[bytes]:
    """``count`` distinct batches of ``batch`` consecutive corpus messages (wrapping round)."""
    n = len(messages)
    return [batch_body([messages[(i * batch + j) % n] for j in range(batch)]) for i in range(count)]


def _request(host: str, port: int, body: bytes) -> bytes:
    head = (
        "POST / HTTP/1.1\r\n"
        f"Host: {host}:{port}\r\n"
        "Content-Type: application/json\r\n"
        f"{TOKEN_HEADER}: {TOKEN}\r\n"
        "User-Agent: smime-collector-bench\r\n"
        "Connection: keep-alive\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode("ascii") + body


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, bool]:
    """Read one response; return (status, whether the server keeps the connection open)."""
    status_line = await reader.readline()
    if not status_line:
        raise ConnectionError("connection closed before a response")
    parts = status_line.split(None, 2)
    status = int(parts[1])
    keep_alive = parts[0] == b"HTTP/1.1"
    length: int | None = None
    chunked = False
    while True:
        line = await reader.readline()
        if line in (b"\r\n", b"\n", b""):
            break
        name, _, value = line.decode("latin-1").partition(":")
        name, value = name.strip().lower(), value.strip().lower()
        if name == "content-length":
            length = int(value)
        elif name == "transfer-encoding" and "chunked" in value:
            chunked = True
        elif name == "connection":
            keep_alive = "close" not in value
    if chunked:
        while True:
            size = int((await reader.readline()).split(b";")[0], 16)
            await reader.readexactly(size + 2)
            if size == 0:
                break
    elif length is not None:
        await reader.readexactly(length)
    else:
        await reader.read()
        keep_alive = False
    return status, keep_alive


class _Shared:
    def __init__(self, max_requests: int, deadline: float) -> None:
        self.next = 0
        self.max_requests = max_requests
        self.deadline = deadline

    def take(self) -> int | None:
        if self.next >= self.max_requests or time.perf_counter() >= self.deadline:
            return None
        self.next += 1
        return self.next - 1


async def _client(
    host: str, port: int, requests: Sequence[bytes], shared: _Shared, result: LoadResult
) -> None:
    reader: asyncio.StreamReader | None = None
    writer: asyncio.StreamWriter | None = None
    try:
        while (index := shared.take()) is not None:
            start = time.perf_counter()
            try:
                if writer is None:
                    reader, writer = await asyncio.open_connection(host, port)
                assert reader is not None
                writer.write(requests[index % len(requests)])
                status, keep_alive = await asyncio.wait_for(_read_response(reader), REQUEST_TIMEOUT)
            except (OSError, ValueError, TimeoutError, asyncio.IncompleteReadError) as exc:
                result.latencies.append(time.perf_counter() - start)
                result.statuses[type(exc).__name__] += 1
                result.error(f"{type(exc).__name__}: {exc}")
                writer = await _close(writer)
                continue
            result.latencies.append(time.perf_counter() - start)
            result.statuses[str(status)] += 1
            if status != 200:
                result.error(f"HTTP {status}")
            if not keep_alive:
                writer = await _close(writer)
    finally:
        await _close(writer)


async def _close(writer: asyncio.StreamWriter | None) -> None:
    if writer is not None:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


def run_load(
    url: str,
    bodies: Sequence[bytes],
    *,
    batch: int,
    concurrency: int,
    max_requests: int,
    max_seconds: float,
    server_pids: Sequence[int] = (),
) -> LoadResult:
    """Send up to ``max_requests`` POSTs (cycling through ``bodies``) from ``concurrency``
    clients, for at most ``max_seconds`` (plus the requests in flight then).

    ``server_pids`` are sampled for their CPU time before and after (``server_cpu``).
    """

    async def load() -> LoadResult:
        parts = urlsplit(url)
        host, port = parts.hostname or "127.0.0.1", parts.port or 80
        if host not in ("127.0.0.1", "localhost", "::1"):
            raise BenchError(f"the load generator only targets loopback, not {host}")
        requests = [_request(host, port, body) for body in bodies]
        result = LoadResult(concurrency, batch)
        start = time.perf_counter()
        shared = _Shared(max_requests, start + max_seconds)
        clients = [_client(host, port, requests, shared, result) for _ in range(concurrency)]
        await asyncio.gather(*clients)
        result.seconds = time.perf_counter() - start
        return result

    before, client = _cpu(server_pids), time.process_time()
    result = asyncio.run(load())
    result.client_cpu = time.process_time() - client
    result.server_cpu = _cpu(server_pids) - before
    return result


def warm_up(
    url: str, messages: Sequence[BenchMessage], server_pids: Sequence[int] = ()
) -> LoadResult:
    """Every corpus message sent once, one per request from 8 clients (two minutes at most):
    each is stored before the measured runs, which then see ``unchanged``."""
    return run_load(
        url,
        batch_bodies(messages, 1, len(messages)),
        batch=1,
        concurrency=8,
        max_requests=len(messages),
        max_seconds=120,
        server_pids=server_pids,
    )


def _cpu(pids: Sequence[int]) -> float:
    try:
        return sum(cpu_seconds(pid) for pid in pids) if pids else float("nan")
    except OSError:
        return float("nan")  # a worker was replaced: no CPU figure for this run


def server_pids(server: Gunicorn) -> list[int]:
    """The gunicorn master and its workers."""
    return [server.process.pid, *children(server.process.pid)]


# -- the server ------------------------------------------------------------------------------


@contextlib.contextmanager
def gunicorn(ini: Path, folder: Path, workers: int = 2) -> Iterator[Gunicorn]:
    """gunicorn as ``make run`` starts it, all workers up; stopped by pid afterwards."""
    folder.mkdir(parents=True, exist_ok=True)
    server = start_gunicorn(ini, folder, workers=workers)
    try:
        deadline = time.monotonic() + 30
        while len(children(server.process.pid)) < workers:
            if time.monotonic() > deadline:
                raise BenchError(f"gunicorn did not start {workers} workers within 30 s")
            time.sleep(0.1)
        _wait_ready(server.url)
        yield server
    finally:
        server.stop()


def _wait_ready(url: str) -> None:
    """The service answers /healthz (workers build the app before they accept connections)."""
    for _ in range(10):
        with urllib.request.urlopen(url + "healthz", timeout=10) as answer:
            answer.read()
