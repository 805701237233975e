"""One ``Auth`` object for clients of httpx and of httpx2.

httpx2 (the ``mcp`` package's HTTP client) accepts as ``auth`` only its own ``Auth``
subclasses, callables and tuples; httpx only its own. The SDK's auth classes are written
against httpx's API, which httpx2 keeps (requests with ``headers``, ``method``, ``url``),
so when httpx2 is installed :func:`dual` makes each also an ``httpx2.Auth``. httpx2 is
looked up once, on first use, and never required.
"""

from __future__ import annotations

import importlib
import threading
from typing import TypeVar

from tasklease import forksafe

__all__ = ["dual"]

A = TypeVar("A", bound=type)

_lock = forksafe.track_lock(threading.Lock())
_looked_up = False
_httpx2_auth: type | None = None
_made: dict[type, type] = {}


def _httpx2() -> type | None:
    global _looked_up, _httpx2_auth  # noqa: PLW0603 - a once-only lookup
    if not _looked_up:
        try:
            base = importlib.import_module("httpx2").Auth
        except (ImportError, AttributeError):
            base = None
        _httpx2_auth = base if isinstance(base, type) else None
        _looked_up = True
    return _httpx2_auth


def dual(cls: A) -> A:
    """``cls``, made also an ``httpx2.Auth`` when httpx2 is installed."""
    with _lock:
        base = _httpx2()
        if base is None or issubclass(cls, base):
            return cls
        made = _made.get(cls)
        if made is None:
            made = type(cls.__name__, (cls, base), {"__module__": cls.__module__})
            made.__doc__ = cls.__doc__
            made.__qualname__ = cls.__qualname__
            _made[cls] = made
        return made  # type: ignore[return-value]
