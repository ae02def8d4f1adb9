"""DKIM key lookups through the configured nameservers, cached per process for their TTL.

A timeout or SERVFAIL means "we cannot judge now": it raises :class:`DNSTempError`, which the
DKIM check turns into a ``tempfail`` so the relay retries. NXDOMAIN or no TXT answer returns
``None``, which dkimpy reports as a missing key (``dkim-invalid``).
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from dataclasses import dataclass

import dns.exception
import dns.name
import dns.nameserver
import dns.rdatatype
import dns.resolver

MAX_CACHE_ENTRIES = 4096
MAX_TTL = 86400


class DNSTempError(Exception):
    """The key could not be looked up right now (timeout, SERVFAIL, no nameserver)."""


@dataclass
class LookupStats:
    lookups: int = 0
    cache_hits: int = 0


class KeyResolver:
    """``txt(name)`` for dkimpy's ``dnsfunc``; one instance per process."""

    def __init__(self, nameservers: list[tuple[str, int]], timeout: float) -> None:
        if nameservers:
            self._resolver = dns.resolver.Resolver(configure=False)
            self._resolver.nameservers = [
                dns.nameserver.Do53Nameserver(host, port) for host, port in nameservers
            ]
        else:
            self._resolver = dns.resolver.Resolver()
        self._resolver.lifetime = timeout
        self._resolver.timeout = timeout
        self._cache: OrderedDict[str, tuple[float, bytes]] = OrderedDict()
        self._lock = threading.Lock()
        self.stats = LookupStats()

    def txt(self, name: bytes | str, timeout: float | None = None) -> bytes | None:
        key = (name.decode("ascii", "replace") if isinstance(name, bytes) else name).lower()
        cached = self._cached(key)
        if cached is not None:
            return cached
        value, ttl = self._query(key)
        if value is not None and ttl > 0:
            with self._lock:
                self._cache[key] = (time.monotonic() + min(ttl, MAX_TTL), value)
                while len(self._cache) > MAX_CACHE_ENTRIES:
                    self._cache.popitem(last=False)
        return value

    def _cached(self, key: str) -> bytes | None:
        with self._lock:
            entry = self._cache.get(key)
            if entry is None:
                return None
            if entry[0] < time.monotonic():
                del self._cache[key]
                return None
            self._cache.move_to_end(key)
            self.stats.cache_hits += 1
            return entry[1]

    def _query(self, key: str) -> tuple[bytes | None, int]:
        self.stats.lookups += 1
        try:
            name = dns.name.from_text(key)
        except dns.exception.DNSException:
            return None, 0  # s= or d= that no DNS name can have: the key cannot exist
        try:
            answer = self._resolver.resolve(name, dns.rdatatype.TXT, search=False)
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
            return None, 0
        except dns.resolver.NoNameservers as exc:
            raise DNSTempError(f"no nameserver answered for {key} (SERVFAIL): {exc}") from None
        except dns.exception.Timeout:
            raise DNSTempError(f"DNS lookup for {key} timed out") from None
        except dns.exception.DNSException as exc:
            raise DNSTempError(f"DNS lookup for {key} failed: {exc}") from None
        record = answer.rrset[0] if answer.rrset else None
        if record is None:
            return None, 0
        return b"".join(record.strings), answer.rrset.ttl
