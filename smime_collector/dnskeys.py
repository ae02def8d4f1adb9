"""DKIM key lookups through the configured nameservers, cached per process for their TTL.

A timeout or SERVFAIL means "we cannot judge now": it raises :class:`DNSTempError`, which the
DKIM check turns into a ``tempfail`` so the relay retries. NXDOMAIN or no TXT answer returns
``None``, a missing key (``dkim-invalid``), and is remembered for :data:`NEGATIVE_TTL` seconds:
a relay retrying a message that names many absent selectors asks DNS once, not on every retry.
Every wait is cut to what is left of the caller's :class:`~smime_collector.deadline.Deadline`.
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

from smime_collector.deadline import Deadline

MAX_CACHE_ENTRIES = 4096
MAX_TTL = 86400
#: Seconds an answer of "no such key" (NXDOMAIN, no TXT record) is remembered.
NEGATIVE_TTL = 60
_MISS = object()


class DNSTempError(Exception):
    """The key could not be looked up right now (timeout, SERVFAIL, no nameserver)."""


@dataclass
class LookupStats:
    lookups: int = 0
    cache_hits: int = 0


class KeyResolver:
    """``txt(name)``: the DKIM key records the DKIM check reads; one instance per process."""

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
        self._cache: OrderedDict[str, tuple[float, bytes | None]] = OrderedDict()
        self._lock = threading.Lock()
        self.stats = LookupStats()

    def txt(self, name: bytes | str, deadline: Deadline | None = None) -> bytes | None:
        """The TXT value at ``name`` (None when there is none), waiting at most
        ``dns-timeout`` and never past ``deadline``, which raises
        :class:`~smime_collector.deadline.DeadlineExceeded` once it is spent."""
        key = (name.decode("ascii", "replace") if isinstance(name, bytes) else name).lower()
        cached = self._cached(key)
        if cached is not _MISS:
            return cached
        wait = (deadline or Deadline.never()).timeout(self._resolver.lifetime)
        value, ttl = self._query(key, wait)
        if value is None:
            ttl = NEGATIVE_TTL
        if ttl > 0:
            with self._lock:
                self._cache[key] = (time.monotonic() + min(ttl, MAX_TTL), value)
                while len(self._cache) > MAX_CACHE_ENTRIES:
                    self._cache.popitem(last=False)
        return value

    def _cached(self, key: str) -> bytes | object | None:
        with self._lock:
            entry = self._cache.get(key)
            if entry is None:
                return _MISS
            if entry[0] < time.monotonic():
                del self._cache[key]
                return _MISS
            self._cache.move_to_end(key)
            self.stats.cache_hits += 1
            return entry[1]

    def _query(self, key: str, wait: float) -> tuple[bytes | None, int]:
        self.stats.lookups += 1
        try:
            name = dns.name.from_text(key)
        except dns.exception.DNSException:
            return None, 0  # s= or d= that no DNS name can have: the key cannot exist
        try:
            answer = self._resolver.resolve(name, dns.rdatatype.TXT, search=False, lifetime=wait)
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
