"""HTTP GET/POST for revocation data, guarded because attacker-sent mail triggers it.

A certificate's CRL distribution point or OCSP URL is chosen by whoever made the certificate,
and the message that carries it is chosen by anyone. So a fetch may go only to a public
address on the internet (unless ``revocation-allow-private = yes``), checked after resolving
the name and then connected to directly (no second lookup a rebinding DNS server could
answer differently); only ``http`` and ``https``; no redirects; a timeout per fetch that is
also cut to the request's deadline, applied to the whole transfer and not just each read; and
a byte limit on the body.
"""

from __future__ import annotations

import http.client
import ipaddress
import socket
import ssl
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

import dns.exception
import dns.nameserver
import dns.resolver

from smime_collector.deadline import Deadline, DeadlineExceeded

ALLOWED_SCHEMES = {"http": 80, "https": 443}
#: Bytes read per recv(): small enough that the deadline is checked often.
READ_CHUNK = 64 * 1024
#: Longest URL taken from a certificate; longer ones are refused unread.
MAX_URL_LENGTH = 2048
USER_AGENT = "smime-collector revocation check"


class FetchError(Exception):
    """A fetch failed. ``transient`` says whether a retry later could succeed (timeout,
    refused connection, 5xx) or not (refused address, redirect, oversize, 4xx)."""

    def __init__(self, message: str, transient: bool) -> None:
        super().__init__(message)
        self.transient = transient


@dataclass(frozen=True)
class FetchPolicy:
    timeout: float
    max_bytes: int
    allow_private: bool = False
    nameservers: tuple[tuple[str, int], ...] = ()


def forbidden_address(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str | None:
    """Why a fetch may not go to ``ip``, or None for a public unicast address."""
    if isinstance(ip, ipaddress.IPv6Address):
        for embedded in (ip.ipv4_mapped, ip.sixtofour, ip.teredo and ip.teredo[1]):
            if embedded is not None:
                return forbidden_address(embedded)
    for name in (
        "is_loopback",
        "is_private",
        "is_link_local",
        "is_multicast",
        "is_unspecified",
        "is_reserved",
    ):
        if getattr(ip, name):
            return f"{ip} is {name.removeprefix('is_').replace('_', '-')}"
    if isinstance(ip, ipaddress.IPv6Address) and ip.is_site_local:
        return f"{ip} is site-local"
    if not ip.is_global:
        return f"{ip} is not a global address"
    return None


def resolve(host: str, policy: FetchPolicy, budget: float) -> list[tuple[int, str]]:
    """The addresses (family, address) a fetch may connect to, in resolver order.

    Names are resolved with dnspython through ``dns-nameservers`` (else the system's
    resolv.conf) within ``budget`` seconds: getaddrinfo() cannot be given a timeout, and a
    fetch must never wait longer than its budget.
    """
    try:
        literal = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        literal = None
    if literal is not None:
        infos = [(socket.AF_INET6 if literal.version == 6 else socket.AF_INET, str(literal))]
    else:
        infos = _lookup(host, policy.nameservers, budget)
    if policy.allow_private:
        return infos
    allowed: list[tuple[int, str]] = []
    refused: list[str] = []
    for family, address in infos:
        why = forbidden_address(ipaddress.ip_address(address))
        if why:
            refused.append(why)
        else:
            allowed.append((family, address))
    if not allowed:
        raise FetchError(
            f"{host} resolves only to addresses that may not be fetched "
            f"({'; '.join(refused) or 'no address'}); set revocation-allow-private = yes "
            "to allow them",
            transient=False,
        )
    return allowed


def _lookup(
    host: str, nameservers: tuple[tuple[str, int], ...], budget: float
) -> list[tuple[int, str]]:
    try:
        if nameservers:
            resolver = dns.resolver.Resolver(configure=False)
            resolver.nameservers = [dns.nameserver.Do53Nameserver(h, p) for h, p in nameservers]
        else:
            resolver = dns.resolver.Resolver()
    except dns.exception.DNSException as exc:
        raise FetchError(f"no DNS resolver to look up {host}: {exc}", transient=True) from None
    ends = time.monotonic() + budget
    found: list[tuple[int, str]] = []
    missing = 0
    for family, kind in ((socket.AF_INET, "A"), (socket.AF_INET6, "AAAA")):
        left = ends - time.monotonic()
        if left <= 0:
            raise FetchError(f"looking up {host} timed out", transient=True)
        try:
            answer = resolver.resolve(host, kind, lifetime=left, search=False)
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
            missing += 1
            continue
        except dns.exception.Timeout:
            raise FetchError(f"looking up {host} timed out", transient=True) from None
        except dns.exception.DNSException as exc:
            raise FetchError(f"cannot look up {host}: {exc}", transient=True) from None
        found.extend((family, record.address) for record in answer)
    if not found:
        raise FetchError(f"{host} has no address (NXDOMAIN or no A/AAAA record)", False)
    return found


class _PinnedConnection(http.client.HTTPConnection):
    """An HTTP(S) connection to an address already checked, with the URL's host name in the
    Host header and (for https) in SNI and certificate verification."""

    def __init__(
        self, host: str, port: int, address: tuple[int, str], timeout: float, tls: bool
    ) -> None:
        super().__init__(host, port, timeout=timeout)
        self._address = address
        self._tls = tls

    def connect(self) -> None:
        family, ip = self._address
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect((ip, self.port))
            if self._tls:
                sock = ssl.create_default_context().wrap_socket(sock, server_hostname=self.host)
        except BaseException:
            sock.close()
            raise
        self.sock = sock


def fetch(
    url: str,
    policy: FetchPolicy,
    deadline: Deadline,
    *,
    body: bytes | None = None,
    content_type: str | None = None,
) -> bytes:
    """GET ``url`` (POST ``body`` when given) under ``policy``; the response body, or
    :class:`FetchError`."""
    if len(url) > MAX_URL_LENGTH:
        raise FetchError(f"URL longer than {MAX_URL_LENGTH} characters", transient=False)
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in ALLOWED_SCHEMES:
        raise FetchError(f"{scheme or 'no'} scheme: only http and https are fetched", False)
    host = parts.hostname
    if not host:
        raise FetchError(f"no host in {url!r}", transient=False)
    try:
        port = parts.port or ALLOWED_SCHEMES[scheme]
    except ValueError:
        raise FetchError(f"bad port in {url!r}", transient=False) from None
    try:
        budget = deadline.timeout(policy.timeout)
    except DeadlineExceeded as exc:
        raise FetchError(str(exc), transient=True) from None
    ends = time.monotonic() + budget
    addresses = resolve(host, policy, budget)
    target = parts.path or "/"
    if parts.query:
        target += "?" + parts.query
    last: FetchError | None = None
    for address in addresses:
        try:
            return _exchange(host, port, address, scheme == "https", target, body,
                             content_type, policy.max_bytes, ends)  # fmt: skip
        except FetchError as exc:
            if not exc.transient:
                raise
            last = exc
        if time.monotonic() >= ends:
            break
    raise last or FetchError(f"{host}: no address answered", transient=True)


def _exchange(
    host: str,
    port: int,
    address: tuple[int, str],
    tls: bool,
    target: str,
    body: bytes | None,
    content_type: str | None,
    max_bytes: int,
    ends: float,
) -> bytes:
    left = ends - time.monotonic()
    if left <= 0:
        raise FetchError(f"{host}: timed out", transient=True)
    conn = _PinnedConnection(host, port, address, left, tls)
    try:
        headers = {"User-Agent": USER_AGENT, "Accept": "*/*", "Connection": "close"}
        if body is not None:
            headers["Content-Type"] = content_type or "application/octet-stream"
        conn.request("POST" if body is not None else "GET", target, body=body, headers=headers)
        _shrink(conn, ends, host)
        response = conn.getresponse()
        status = response.status
        if 300 <= status < 400:
            where = response.getheader("Location", "?")
            raise FetchError(f"{host} answered {status} (redirect to {where}, not followed)", False)
        if status >= 500:
            raise FetchError(f"{host} answered {status}", transient=True)
        if status != 200:
            raise FetchError(f"{host} answered {status}", transient=False)
        declared = response.getheader("Content-Length")
        if declared and declared.isdigit() and int(declared) > max_bytes:
            raise FetchError(
                f"{host} sends {declared} bytes, over revocation-max-bytes ({max_bytes})", False
            )
        chunks: list[bytes] = []
        size = 0
        while True:
            _shrink(conn, ends, host)
            chunk = response.read1(READ_CHUNK) if hasattr(response, "read1") else b""
            if not chunk:
                break
            size += len(chunk)
            if size > max_bytes:
                raise FetchError(f"{host} sent more than revocation-max-bytes ({max_bytes})", False)
            chunks.append(chunk)
        return b"".join(chunks)
    except TimeoutError:
        raise FetchError(f"{host}: timed out", transient=True) from None
    except ssl.SSLError as exc:
        raise FetchError(f"{host}: TLS failed: {exc}", transient=True) from None
    except (OSError, http.client.HTTPException) as exc:
        raise FetchError(f"{host}: {exc.__class__.__name__}: {exc}", transient=True) from None
    finally:
        conn.close()


def _shrink(conn: http.client.HTTPConnection, ends: float, host: str) -> None:
    """Cut the socket's timeout to what is left of the fetch: a server trickling one byte
    per second must not hold the request past its budget."""
    left = ends - time.monotonic()
    if left <= 0:
        raise FetchError(f"{host}: timed out", transient=True)
    if conn.sock is not None:
        conn.sock.settimeout(left)
