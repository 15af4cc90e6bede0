"""A short-lived, per-process cache of authenticated API keys.

A status poll would otherwise pay a database round trip (and a worker-thread hop) just to learn
again that the same key is valid. Entries are keyed by the SHA-256 of the presented string, so no
plaintext secret is kept, and live ``ttl`` seconds: a key revoked through this process is dropped
at once (see :func:`forget`), one revoked through another API process stops working within
``ttl``. ``ttl = 0`` turns the cache off. Only successes are cached; a wrong key always costs a
lookup, so the cache cannot be filled with garbage from outside.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections import OrderedDict
from typing import Generic, TypeVar

T = TypeVar("T")


class KeyCache(Generic[T]):
    def __init__(self, ttl: float, max_entries: int = 10_000) -> None:
        self.ttl = ttl
        self.max_entries = max_entries
        self._entries: OrderedDict[str, tuple[float, str, T]] = OrderedDict()
        self._lock = threading.Lock()

    @staticmethod
    def _digest(presented: str) -> str:
        return hashlib.sha256(presented.encode()).hexdigest()

    def get(self, presented: str) -> T | None:
        if self.ttl <= 0:
            return None
        digest = self._digest(presented)
        with self._lock:
            entry = self._entries.get(digest)
            if entry is None:
                return None
            if entry[0] < time.monotonic():
                del self._entries[digest]
                return None
            return entry[2]

    def put(self, presented: str, key_id: str, value: T) -> None:
        if self.ttl <= 0:
            return
        with self._lock:
            self._entries[self._digest(presented)] = (time.monotonic() + self.ttl, key_id, value)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)

    def forget(self, key_id: str) -> None:
        """Drop every entry of one key (after it was revoked or its role changed)."""
        with self._lock:
            for digest in [d for d, e in self._entries.items() if e[1] == key_id]:
                del self._entries[digest]
