"""Verified tokens remembered by SHA-256 of the token string, least recently used evicted."""

from __future__ import annotations

import threading
from collections import OrderedDict

from tasklease.verify._claims import VerifiedToken

__all__ = ["TokenCache"]


class TokenCache:
    """Verified tokens by SHA-256 of the token string; least recently used evicted."""

    def __init__(self, size: int) -> None:
        self._size = size
        self._entries: OrderedDict[bytes, VerifiedToken] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: bytes) -> VerifiedToken | None:
        if key not in self._entries:  # a miss (every first-seen token) takes no lock
            return None
        with self._lock:
            found = self._entries.get(key)
            if found is not None:
                self._entries.move_to_end(key)
            return found

    def put(self, key: bytes, token: VerifiedToken) -> None:
        if self._size <= 0:
            return
        with self._lock:
            self._entries[key] = token
            self._entries.move_to_end(key)
            while len(self._entries) > self._size:
                self._entries.popitem(last=False)

    def discard(self, key: bytes) -> None:
        with self._lock:
            self._entries.pop(key, None)
