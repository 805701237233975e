"""``bounds.bounded_body``: a response body read off the wire with a size cap, never
inflated, which every client of a server it does not control reads its answers with."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from tasklease.bounds import MAX_EXPIRES_IN, bounded_body, json_document, read_app_token

LIMIT = 1024


class _Stream(httpx.SyncByteStream):
    """A body on the wire, in chunks, counting the bytes read from it."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks = chunks
        self.read = 0

    def __iter__(self) -> Iterator[bytes]:
        for chunk in self._chunks:
            self.read += len(chunk)
            yield chunk


def _streamed(chunks: Iterator[bytes], **headers: str) -> tuple[httpx.Response, _Stream]:
    stream = _Stream(chunks)
    return httpx.Response(200, stream=stream, headers=headers), stream


def _sized(total: int, chunk: int = 100) -> Iterator[bytes]:
    while total > 0:
        yield b"x" * min(chunk, total)
        total -= chunk


def test_a_body_of_exactly_the_limit_is_read_whole() -> None:
    response, _ = _streamed(_sized(LIMIT))
    assert bounded_body(response, LIMIT) == b"x" * LIMIT


def test_a_body_one_byte_over_the_limit_is_refused() -> None:
    response, _ = _streamed(_sized(LIMIT + 1))
    with pytest.raises(ValueError, match=f"larger than {LIMIT} bytes"):
        bounded_body(response, LIMIT)


def test_an_endless_body_is_cut_off_after_little_more_than_the_limit() -> None:
    def endless() -> Iterator[bytes]:
        while True:
            yield b"x" * 256

    response, stream = _streamed(endless())
    with pytest.raises(ValueError, match="larger than"):
        bounded_body(response, LIMIT)
    assert stream.read <= LIMIT + 256


@pytest.mark.parametrize("declared", [str(LIMIT + 1), "9" * 5000, "0" * 40 + "99999"])
def test_a_declared_length_over_the_limit_is_refused_before_reading(declared: str) -> None:
    # "9" * 5000: int() of that many digits raises its own ValueError; the length is
    # compared first. Leading zeros do not make a small length look large, nor the reverse.
    response, stream = _streamed(_sized(10), **{"content-length": declared})
    with pytest.raises(ValueError, match="larger than"):
        bounded_body(response, LIMIT)
    assert stream.read == 0


def test_a_declared_length_within_the_limit_is_read() -> None:
    response, _ = _streamed(_sized(10), **{"content-length": "0010"})
    assert bounded_body(response, LIMIT) == b"x" * 10


@pytest.mark.parametrize("encoding", ["gzip", "br", "deflate", "zstd", "identity, gzip", "GZIP"])
def test_a_compressed_body_is_refused_unread(encoding: str) -> None:
    response, stream = _streamed(
        iter([b"\x1f\x8b" + b"\0" * 100]), **{"content-encoding": encoding}
    )
    with pytest.raises(ValueError, match="compressed"):
        bounded_body(response, LIMIT)
    assert stream.read == 0


@pytest.mark.parametrize("encoding", ["identity", "", "Identity "])
def test_an_identity_body_is_read(encoding: str) -> None:
    response, _ = _streamed(iter([b"{}"]), **{"content-encoding": encoding})
    assert bounded_body(response, LIMIT) == b"{}"


def test_a_response_read_already_is_checked_by_its_length() -> None:
    # A transport that is no network (a test's mock) hands back responses read already.
    assert bounded_body(httpx.Response(200, content=b"x" * LIMIT), LIMIT) == b"x" * LIMIT
    with pytest.raises(ValueError, match="larger than"):
        bounded_body(httpx.Response(200, content=b"x" * (LIMIT + 1)), LIMIT)


# --- read_app_token: the answer to an app sign-in ------------------------------------------


def _answer(body: bytes) -> httpx.Response:
    return _streamed(iter([body]))[0]


@pytest.mark.parametrize(
    "body",
    [
        b"[]",
        b'"x"',
        b"null",
        b"not json",
        b'{"expires_in": 600}',
        b'{"access_token": 5, "expires_in": 600}',
        b'{"access_token": "", "expires_in": 600}',
        b'{"access_token": ["t"], "expires_in": 600}',
        b'{"access_token": "t"}',
        b'{"access_token": "t", "expires_in": "600"}',
        b'{"access_token": "t", "expires_in": 600.5}',
        b'{"access_token": "t", "expires_in": true}',
        b'{"access_token": "t", "expires_in": 0}',
        b'{"access_token": "t", "expires_in": -5}',
        b'{"access_token": "t", "expires_in": 1' + b"0" * 400 + b"}",
        b"[" * 60_000,  # under the cap, too deep for the decoder (a RecursionError)
    ],
)
def test_an_answer_that_is_not_an_app_token_is_refused(body: bytes) -> None:
    # Would fail if: such an answer raised TypeError, KeyError or OverflowError, or its
    # access_token (5, "") was taken as a token.
    with pytest.raises(ValueError, match="not an app token"):
        read_app_token(_answer(body))


def test_an_app_token_and_its_lifetime_are_read() -> None:
    assert read_app_token(_answer(b'{"access_token": "t", "expires_in": 600}')) == ("t", 600)
    longest = f'{{"access_token": "t", "expires_in": {MAX_EXPIRES_IN}}}'.encode()
    assert read_app_token(_answer(longest)) == ("t", MAX_EXPIRES_IN)


def test_a_compressed_or_oversized_sign_in_answer_is_refused() -> None:
    with pytest.raises(ValueError, match="compressed"):
        read_app_token(_streamed(iter([b"{}"]), **{"content-encoding": "gzip"})[0])
    with pytest.raises(ValueError, match="larger than 65536 bytes"):
        read_app_token(_streamed(_sized(65537))[0])


def test_json_nested_too_deeply_to_decode_is_a_value_error() -> None:
    # Would fail if: the decoder's RecursionError (a RuntimeError) escaped the readers,
    # whose callers handle ValueError (decision 164).
    with pytest.raises(ValueError, match="nested too deeply"):
        json_document(b"[" * 60_000)
    assert json_document(b'{"a": [1, {"b": null}]}') == {"a": [1, {"b": None}]}
