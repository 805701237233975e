"""The answer cap is exact: an answer of ``limit`` bytes is read, one byte more is refused,
however it arrives (chunked, no ``content-length`` to judge it by beforehand)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest

from tasklease.client._bounded import (
    AnswerRefused,
    bounded_async_client,
    bounded_client,
)

LIMIT = 64


def _chunks(size: int) -> Iterator[bytes]:
    for _ in range(size):
        yield b"x"


async def _async_chunks(size: int) -> AsyncIterator[bytes]:
    for _ in range(size):
        yield b"x"


def _read(size: int) -> bytes:
    transport = httpx.MockTransport(lambda request: httpx.Response(200, content=_chunks(size)))
    with bounded_client(LIMIT, transport=transport) as client:
        return client.get("https://broker.example/v1/challenge").content


def _aread(size: int) -> bytes:
    async def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=_async_chunks(size))

    async def read() -> bytes:
        transport = httpx.MockTransport(answer)
        async with bounded_async_client(LIMIT, transport=transport) as client:
            return (await client.get("https://broker.example/v1/challenge")).content

    return asyncio.run(read())


def test_a_chunked_answer_of_exactly_the_cap_is_read() -> None:
    assert _read(LIMIT) == b"x" * LIMIT
    assert _aread(LIMIT) == b"x" * LIMIT


def test_a_chunked_answer_one_byte_over_the_cap_is_refused() -> None:
    with pytest.raises(AnswerRefused, match=f"larger than {LIMIT}"):
        _read(LIMIT + 1)
    with pytest.raises(AnswerRefused, match=f"larger than {LIMIT}"):
        _aread(LIMIT + 1)
