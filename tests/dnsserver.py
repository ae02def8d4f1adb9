"""A real loopback DNS server (UDP and TCP on 127.0.0.1) serving TXT records for DKIM tests.

Built on ``dnslib.server.DNSServer`` with this module's resolver. It behaves like an
authoritative server: TXT values longer than 255 bytes are split into several
character-strings, unknown names get NXDOMAIN, and UDP answers that exceed the client's
payload size (512 bytes, or the EDNS0 size it advertises) come back with the TC flag so
the client retries over TCP on the same port.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Self

import dkim
import dns.exception
import dns.resolver
from dnslib import QTYPE, RCODE, RR, TXT, A, DNSError, DNSRecord
from dnslib.server import BaseResolver, DNSHandler, DNSLogger, DNSServer

MODES = ("normal", "servfail", "drop")
_MAX_CHARSTRING = 255
_BIND_ATTEMPTS = 20
_TCP_DROP_HOLD = 30.0  # seconds a dropped TCP query keeps its connection open
_QUOTED = re.compile(r'"((?:[^"\\]|\\.)*)"')
_ESCAPE = re.compile(r"\\(\d{3}|.)")


class _Dropped(DNSError):
    """Raised by the resolver in "drop" mode; dnslib's handler then sends nothing."""


def _normalize(name: str) -> str:
    """Lower-case, fully qualified form of a DNS name."""
    name = name.strip().lower()
    return name if name.endswith(".") else name + "."


def _split_txt(value: str) -> list[bytes]:
    """Split a TXT value into <=255-byte character-strings, as zone files and DNS servers do."""
    data = value.encode()
    return [data[i : i + _MAX_CHARSTRING] for i in range(0, len(data), _MAX_CHARSTRING)] or [b""]


def _udp_limit(request: DNSRecord) -> int:
    """The largest UDP answer the client accepts: its EDNS0 payload size, else 512."""
    sizes = [rr.rclass for rr in request.ar if rr.rtype == QTYPE.OPT]
    return max([512, *sizes])


class LoopbackDNS(BaseResolver):
    """TXT-only DNS server on 127.0.0.1:<free port>, UDP and TCP, with switchable failure modes.

    ``mode`` is "normal" (answer; NXDOMAIN for unknown names), "servfail" (SERVFAIL for every
    query) or "drop" (no answer at all: UDP queries are ignored, TCP connections are held open
    without a reply). ``queries`` counts every well-formed query received, ``tcp_queries`` the
    TCP ones, and ``query_log`` lists ``(name, type)`` in arrival order.
    """

    def __init__(self, records: dict[str, str] | None = None, ttl: int = 300) -> None:
        self.ttl = ttl
        self._lock = threading.Lock()
        self._records: dict[str, list[tuple[str, int]]] = {}
        self._addresses: dict[str, list[str]] = {}
        self._mode = "normal"
        self._queries = 0
        self._tcp_queries = 0
        self.query_log: list[tuple[str, str]] = []
        self._servers: list[DNSServer] = []
        self._threads: list[threading.Thread] = []
        self._stopping = threading.Event()
        self.port = 0
        for name, value in (records or {}).items():
            self.add_txt(name, value)

    # -- records -----------------------------------------------------------------------------

    def add_txt(
        self, name: str, value: str, ttl: int | None = None, *, append: bool = False
    ) -> None:
        """Serve ``value`` as ``name``'s TXT record (replacing; ``append=True`` adds one)."""
        key = _normalize(name)
        entry = (value, self.ttl if ttl is None else ttl)
        with self._lock:
            self._records[key] = [*self._records.get(key, []), entry] if append else [entry]

    def add_a(self, name: str, address: str) -> None:
        """Serve ``address`` as ``name``'s A record (for revocation URLs that name a host)."""
        with self._lock:
            self._addresses[_normalize(name)] = [address]

    def remove(self, name: str) -> None:
        """Stop serving ``name`` (it then gets NXDOMAIN); unknown names are ignored."""
        with self._lock:
            self._records.pop(_normalize(name), None)
            self._addresses.pop(_normalize(name), None)

    # -- state -------------------------------------------------------------------------------

    @property
    def mode(self) -> str:
        """Current behaviour: "normal", "servfail" or "drop"."""
        return self._mode

    @mode.setter
    def mode(self, value: str) -> None:
        if value not in MODES:
            raise ValueError(f"mode must be one of {MODES}, not {value!r}")
        self._mode = value

    @property
    def queries(self) -> int:
        """Number of queries received so far (UDP and TCP)."""
        with self._lock:
            return self._queries

    @property
    def tcp_queries(self) -> int:
        """Number of queries received over TCP."""
        with self._lock:
            return self._tcp_queries

    def reset_queries(self) -> None:
        """Zero the counters and clear ``query_log``."""
        with self._lock:
            self._queries = self._tcp_queries = 0
            self.query_log.clear()

    @property
    def nameserver(self) -> str:
        """``"127.0.0.1:<port>"``, the format of the ``dns-nameservers`` config key."""
        return f"127.0.0.1:{self.port}"

    # -- dnslib resolver hook ----------------------------------------------------------------

    def resolve(self, request: DNSRecord, handler: DNSHandler) -> DNSRecord:
        """Answer one query (called by dnslib on a server thread)."""
        qname, key = str(request.q.qname), _normalize(str(request.q.qname))
        with self._lock:
            self._queries += 1
            self._tcp_queries += handler.protocol == "tcp"
            self.query_log.append((qname, QTYPE.get(request.q.qtype)))
            answers = list(self._records.get(key, [])) if key in self._records else None
            addresses = list(self._addresses.get(key, []))
            if answers is None and addresses:
                answers = []
        if self._mode == "drop":
            if handler.protocol == "tcp":
                self._stopping.wait(_TCP_DROP_HOLD)
            raise _Dropped("dropped")
        reply = request.reply()
        if self._mode == "servfail" or answers is None:
            reply.header.rcode = RCODE.SERVFAIL if self._mode == "servfail" else RCODE.NXDOMAIN
            return reply
        if request.q.qtype == QTYPE.A:
            for address in addresses:
                reply.add_answer(RR(qname, QTYPE.A, rdata=A(address), ttl=self.ttl))
        if request.q.qtype in (QTYPE.TXT, QTYPE.ANY):  # other types: NOERROR, no data
            for value, ttl in answers:
                reply.add_answer(RR(qname, QTYPE.TXT, rdata=TXT(_split_txt(value)), ttl=ttl))
        if handler.protocol == "udp" and len(reply.pack()) > _udp_limit(request):
            reply = request.reply()
            reply.header.tc = 1
        return reply

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> Self:
        """Bind UDP and TCP on the same free 127.0.0.1 port and serve in daemon threads."""
        if self._servers:
            raise RuntimeError("already started")
        self._stopping.clear()
        logger = DNSLogger(logf=lambda _msg: None)
        for _ in range(_BIND_ATTEMPTS):
            udp = DNSServer(self, address="127.0.0.1", port=0, logger=logger)
            port = udp.server.server_address[1]
            try:
                tcp = DNSServer(self, address="127.0.0.1", port=port, tcp=True, logger=logger)
            except OSError:
                udp.server.server_close()
                continue
            self.port, self._servers = port, [udp, tcp]
            break
        else:
            raise OSError("no free port for both UDP and TCP on 127.0.0.1")
        for srv, proto in zip(self._servers, ("udp", "tcp"), strict=True):
            thread = threading.Thread(
                target=srv.server.serve_forever,
                kwargs={"poll_interval": 0.05},
                name=f"loopback-dns-{proto}-{port}",
                daemon=True,
            )
            thread.start()
            self._threads.append(thread)
        return self

    def stop(self) -> None:
        """Shut both servers down and close their sockets (safe to call twice)."""
        self._stopping.set()
        for srv in self._servers:
            srv.server.shutdown()
            srv.server.server_close()
        for thread in self._threads:
            thread.join(timeout=5)
        self._servers, self._threads = [], []

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- client helpers ----------------------------------------------------------------------

    def resolver(self, lifetime: float = 2.0) -> dns.resolver.Resolver:
        """A dnspython resolver that asks only this server."""
        res = dns.resolver.Resolver(configure=False)
        res.nameservers = ["127.0.0.1"]
        res.port = self.port
        res.lifetime = lifetime
        return res

    def dkim_dnsfunc(self, lifetime: float = 2.0) -> Callable[..., bytes | None]:
        """A ``dnsfunc`` for ``dkim.verify`` that looks TXT records up here via dnspython."""
        res = self.resolver(lifetime)

        def dnsfunc(name: bytes | str, timeout: float = 5) -> bytes | None:
            qname = name.decode() if isinstance(name, bytes) else name
            try:
                answer = res.resolve(qname, "TXT", lifetime=min(timeout, lifetime))
            except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer, dns.resolver.NoNameservers):
                return None
            except dns.exception.Timeout as exc:
                raise dkim.DnsTimeoutError(str(exc)) from exc
            return b"".join(answer[0].strings)

        return dnsfunc


def _unescape(text: str) -> str:
    """Undo zone-file escapes inside a quoted string (``\\"``, ``\\\\``, ``\\DDD``)."""
    return _ESCAPE.sub(lambda m: chr(int(m[1])) if m[1].isdigit() else m[1], text)


def load_zone_file(path: str | Path) -> dict[str, str]:
    """Read the TXT records of a one-record-per-line zone file into ``{name: value}``.

    Lines look like ``name. [ttl] [IN] TXT "part one" "part two"``; the quoted parts are
    concatenated. Blank lines, ``;``/``#`` comments and other record types are skipped.
    """
    records: dict[str, str] = {}
    for lineno, line in enumerate(Path(path).read_text().splitlines(), 1):
        stripped = line.strip()
        if not stripped or stripped[0] in ";#":
            continue
        head = stripped.split('"', 1)[0].split()
        if "TXT" not in (token.upper() for token in head[1:]):
            continue
        parts = _QUOTED.findall(stripped)
        if not parts:
            raise ValueError(f"{path}:{lineno}: TXT record without a quoted value")
        records[head[0]] = "".join(_unescape(part) for part in parts)
    return records
