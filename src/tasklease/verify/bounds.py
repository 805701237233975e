"""Bounds on what a client reads from a server it does not control: a total deadline for
an httpx client's requests, a response body and an event stream's lines read off the wire
with a length cap. Used by the verifier, the broker's federation followers and its
attestation key fetches.

httpx's timeouts bound each network operation (a connect, one read), not a request: a
server that sends a byte every few seconds keeps a request going for as long as it likes.
:func:`total_deadline` closes the client once the deadline passes, which fails whatever
request is under way with an ``httpx.TransportError`` (a read on a closed socket).

A body is counted as it arrives, never inflated: httpx decompresses what the server
compressed before anyone can count it (gzip inflates up to a thousandfold: half a
megabyte on the wire, half a gigabyte in memory), so :func:`bounded_body` and
:func:`bounded_lines` refuse a compressed answer. Their requests ask for
``accept-encoding: identity`` and are sent streaming (``client.stream(...)``): otherwise
httpx reads, and inflates, the whole body before it returns the response.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

import httpx

__all__ = ["bounded_body", "bounded_lines", "total_deadline"]


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


def bounded_body(response: httpx.Response, limit: int) -> bytes:
    """The body of ``response`` (opened streaming), read from the bytes on the wire, at
    most ``limit`` bytes of it: reading stops at the first chunk past ``limit``, and a
    ``content-length`` declaring more is refused before anything is read. A compressed
    body is refused, not inflated.

    Raises:
        ValueError: a compressed body, or one larger than ``limit`` bytes.
        httpx.HTTPError: reading failed (a timeout, a connection closed).
    """
    encoding = response.headers.get("content-encoding", "identity").strip().lower()
    if encoding not in ("identity", ""):
        raise ValueError(f"a compressed body ({encoding[:40]}) is refused")
    too_large = f"a body larger than {limit} bytes is refused"
    # A response read already (a transport that is no network: a test's mock) is its body.
    if response.is_stream_consumed:
        if len(response.content) > limit:
            raise ValueError(too_large)
        return response.content
    declared = response.headers.get("content-length", "")
    if declared.isascii() and declared.isdigit():
        digits = declared.lstrip("0")
        # Compared by length first: int() of a few thousand digits raises.
        if len(digits) > len(str(limit)) or (digits and int(digits) > limit):
            raise ValueError(too_large)
    body = bytearray()
    for chunk in response.iter_raw():
        body += chunk
        if len(body) > limit:
            raise ValueError(too_large)
    return bytes(body)


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
