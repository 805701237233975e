"""A total deadline for an httpx client's requests.

httpx's timeouts bound each network operation (a connect, one read), not a request: a
server that sends a byte every few seconds keeps a request going for as long as it likes.
:func:`total_deadline` closes the client once the deadline passes, which fails whatever
request is under way with an ``httpx.TransportError`` (a read on a closed socket).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

import httpx

__all__ = ["total_deadline"]


@contextlib.contextmanager
def total_deadline(client: httpx.Client, seconds: float) -> Iterator[None]:
    """Within the block, ``client``'s requests end by ``seconds`` from its start: then the
    client is closed (from a timer thread), and the request under way fails."""
    timer = threading.Timer(seconds, client.close)
    timer.daemon = True
    timer.start()
    try:
        yield
    finally:
        timer.cancel()
