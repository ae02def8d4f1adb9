"""The per-process caches the checks share, each bounded so that mail anyone can send cannot
make it grow: answers kept only for short inputs, and answers that hold only for a while."""

from __future__ import annotations

import functools
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from datetime import datetime
from typing import Any, Generic, TypeVar

F = TypeVar("F", bound=Callable[..., Any])
K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


def cached_when_short(
    maxsize: int, max_len: int, size: Callable[..., int] = len
) -> Callable[[F], F]:
    """``functools.lru_cache(maxsize)`` for calls whose ``size(*args)`` is at most
    ``max_len``; a longer input is computed every time, so that hostile input cannot pin
    large keys in the cache. For pure functions of their positional arguments."""

    def decorate(func: F) -> F:
        cached = functools.lru_cache(maxsize=maxsize)(func)

        @functools.wraps(func)
        def call(*args: Any) -> Any:
            return cached(*args) if size(*args) <= max_len else func(*args)

        return call  # type: ignore[return-value]

    return decorate


class WindowCache(Generic[K, V]):
    """Answers that hold only between two times, least recently used dropped past ``size``.

    A stored answer is served only when the time asked about falls inside its window; outside
    it the answer is not served (it stays until it is dropped or replaced).
    """

    def __init__(self, size: int) -> None:
        self.size = size
        self._items: OrderedDict[K, tuple[V, datetime, datetime]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: K, at: datetime) -> V | None:
        with self._lock:
            item = self._items.get(key)
            if item is None or not item[1] <= at <= item[2]:
                return None
            self._items.move_to_end(key)
            return item[0]

    def put(self, key: K, value: V, start: datetime, end: datetime) -> None:
        with self._lock:
            self._items[key] = (value, start, end)
            while len(self._items) > self.size:
                self._items.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
