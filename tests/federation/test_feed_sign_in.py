# Would fail if: the follower read its sign-in answer whole and inflated (a gzip bomb
# took the broker's memory), or an answer that is not a JSON object, or whose
# access_token or expires_in is of the wrong type, raised AttributeError, TypeError or
# OverflowError out of the follower instead of its FeedError.
"""A federation feed follower's sign-in at its peer (``POST /v1/app/auth``,
tasklease.federation.revocations): the answer is asked for uncompressed and read off the
wire, at most 64 KiB, and anything but an app token is a FeedError, which the follower's
loop logs and retries later.

Over loopback HTTP, against a fake peer (uvicorn in a thread, answers_support): the
sign-in is given the follower's client directly (the follower's own client is https only).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from answers_support import GZIP, PEAK_BYTES, Answer, FakeServer, bomb, peak_memory, serving
from bundle_support import make_broker

from tasklease.federation.revocations import FeedError, FeedSource, _Follower


@pytest.fixture(scope="module")
def server() -> Iterator[FakeServer]:
    with serving() as fake:
        yield fake


@pytest.fixture
def peer(
    server: FakeServer, tmp_path: Path
) -> Iterator[tuple[FakeServer, _Follower, httpx.Client]]:
    server.reset()
    credentials = tmp_path / "peer.json"
    credentials.write_text(json.dumps({"client_id": "app-1", "client_secret": "s" * 40}))
    credentials.chmod(0o600)
    source = FeedSource("a.example", server.url, "", str(credentials))
    follower = _Follower(make_broker("b.example"), source)
    with httpx.Client(base_url=server.url, timeout=10) as client:
        yield server, follower, client


def test_a_gzip_bomb_for_the_sign_in_is_a_feed_error_uninflated(
    peer: tuple[FakeServer, _Follower, httpx.Client],
) -> None:
    fake, follower, client = peer
    fake.answer(Answer(body=bomb(), headers=GZIP))
    with peak_memory() as peak, pytest.raises(FeedError) as refused:
        follower._bearer(client)
    assert peak.bytes < PEAK_BYTES
    assert "compressed" in refused.value.reason
    assert fake.encodings == ["identity"]


def test_a_sign_in_answer_over_the_cap_is_a_feed_error(
    peer: tuple[FakeServer, _Follower, httpx.Client],
) -> None:
    fake, follower, client = peer
    fake.answer(Answer(body=b" " * 65536, chunks=800))
    with peak_memory() as peak, pytest.raises(FeedError) as refused:
        follower._bearer(client)
    assert peak.bytes < PEAK_BYTES
    assert "larger than 65536 bytes" in refused.value.reason


@pytest.mark.parametrize(
    "body",
    [
        # One of each kind; every kind is in test_bounded_body.py (read_app_token).
        b"[]",
        b'{"access_token": 5, "expires_in": 600}',
        b'{"access_token": "t", "expires_in": 1' + b"0" * 400 + b"}",
    ],
)
def test_a_malformed_sign_in_is_a_feed_error(
    peer: tuple[FakeServer, _Follower, httpx.Client], body: bytes
) -> None:
    fake, follower, client = peer
    fake.answer(Answer(body=body))
    with pytest.raises(FeedError) as refused:
        follower._bearer(client)
    assert refused.value.reason == "signing in to the feed: the answer is not an app token"


def test_a_refused_sign_in_is_a_feed_error_with_its_status_and_its_body_unread(
    peer: tuple[FakeServer, _Follower, httpx.Client],
) -> None:
    fake, follower, client = peer
    fake.answer(Answer(status=401, body=bomb(), headers=GZIP))
    with peak_memory() as peak, pytest.raises(FeedError) as refused:
        follower._bearer(client)
    assert peak.bytes < PEAK_BYTES
    assert refused.value.reason == "signing in to the feed: HTTP 401"


def test_a_sign_in_gives_its_token_and_keeps_it(
    peer: tuple[FakeServer, _Follower, httpx.Client],
) -> None:
    fake, follower, client = peer
    fake.answer(Answer(body=b'{"access_token": "peer-token", "expires_in": 600}'))
    assert follower._bearer(client) == "peer-token"
    assert follower._bearer(client) == "peer-token"
    assert fake.paths == ["/v1/app/auth"]
