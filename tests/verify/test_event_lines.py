"""The revocation feed readers read lines off the wire with a bound: an endless line, an
event of endless data lines or a compressed stream from a hostile or broken server is
refused before it fills the reader's memory."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from tasklease.bounds import bounded_lines
from tasklease.federation.revocations import FeedError, parse_event

LIMIT = 1024


def _response(chunks: Iterator[bytes], **headers: str) -> httpx.Response:
    class Stream(httpx.SyncByteStream):
        def __iter__(self) -> Iterator[bytes]:
            yield from chunks

    return httpx.Response(200, stream=Stream(), headers=headers)


def test_lines_are_read_across_chunks_and_line_ends() -> None:
    chunks = iter([b"event: revo", b"cation\r\ndata: {}\n", b"\n: keep", b"alive\n"])
    assert list(bounded_lines(_response(chunks), LIMIT)) == [
        "event: revocation",
        "data: {}",
        "",
        ": keepalive",
    ]


def test_an_endless_line_is_refused_after_reading_little_more_than_the_limit() -> None:
    # Would fail if: the reader buffered a line until its end, which a hostile server
    # never sends (300 MB without a newline took 350 MB of the reader).
    read = 0

    def endless() -> Iterator[bytes]:
        nonlocal read
        while True:
            read += 256
            yield b"x" * 256

    with pytest.raises(ValueError, match="too long"):
        list(bounded_lines(_response(endless()), LIMIT))
    assert read <= LIMIT + 256


def test_a_compressed_stream_is_refused() -> None:
    with pytest.raises(ValueError, match="compressed"):
        list(bounded_lines(_response(iter([b"\x1f\x8b"]), **{"content-encoding": "gzip"}), LIMIT))


def test_an_event_of_endless_data_lines_is_refused() -> None:
    def lines() -> Iterator[str]:
        yield "event: revocation"
        while True:
            yield "data: " + "x" * 60_000

    with pytest.raises(FeedError, match="too large"):
        list(parse_event(lines()))
