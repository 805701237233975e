"""Bounds on what a client reads from a server it does not control: a total deadline for
an httpx client's requests, and an event stream's lines read off the wire with a length
cap. Used by the verifier, the broker's federation followers and its attestation key
fetches.

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

__all__ = ["bounded_lines", "total_deadline"]


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


def bounded_lines(response: httpx.Response, limit: int) -> Iterator[str]:
    """A server-sent event stream's lines (without their ``\n`` or ``\r\n``), read from
    the bytes on the wire: none may be longer than ``limit`` bytes, and the stream must not
    be compressed (it is asked for as ``identity``), so a hostile or broken server cannot
    make the reader buffer an endless line or inflate a small answer.

    Raises:
        ValueError: a line longer than ``limit``, or a compressed stream.
    """
    encoding = response.headers.get("content-encoding", "identity").lower()
    if encoding not in ("identity", ""):
        raise ValueError(f"a compressed event stream ({encoding}) is refused")
    pending = bytearray()
    # A response read already (a transport that is no network: a test's mock) is its body.
    chunks = [response.content] if response.is_stream_consumed else response.iter_raw()
    for chunk in chunks:
        pending += chunk
        start = 0
        while (end := pending.find(b"\n", start)) != -1:
            line = bytes(pending[start:end])
            start = end + 1
            if len(line) > limit:
                raise ValueError("event stream line too long")
            yield line.removesuffix(b"\r").decode("utf-8", "replace")
        del pending[:start]
        if len(pending) > limit:
            raise ValueError("event stream line too long")
