"""The revocation feed follower in process (verify._feed), the stream served from memory
and its clock injected: the feed proves current only from the broker's ``sync`` on, is
live only while a stream is connected, sends back an anchored cursor only when it names
the entry read, and bounds the size of one event."""

from __future__ import annotations

import json
import threading
from typing import Any

import httpx
import pytest

from tasklease.verify._feed import EventParser, FeedFollower
from tasklease.verify._revocations import RevocationIndex


def _entry(seq: int, ident: str) -> bytes:
    data = {
        "level": "token",
        "target": f"jti-{seq}",
        "revoked_at": 100,
        "expires_at": 2_000_000_000,
        "seq": seq,
    }
    return f"id: {ident}\nevent: revocation\ndata: {json.dumps(data)}\n\n".encode()


SYNC = b'id: 2.ff\nevent: sync\ndata: {"cursor": 2, "server_time": 0}\n\n'


def _follower(answer: Any, clock: list[float]) -> FeedFollower:
    client = httpx.Client(base_url="http://broker", transport=httpx.MockTransport(answer))
    return FeedFollower(
        client,
        RevocationIndex(),
        token_source=lambda: "a-token",
        forget_token=lambda: None,
        read_timeout=5.0,
        on_revocation=lambda: None,
        housekeeping=lambda: None,
        monotonic=lambda: clock[0],
    )


def test_entries_before_sync_do_not_make_the_feed_current() -> None:
    bodies = [_entry(1, "1.aa"), _entry(1, "1.aa") + _entry(2, "2.bb") + SYNC]
    clock = [500.0]
    follower = _follower(lambda _r: httpx.Response(200, content=bodies.pop(0)), clock)
    follower._follow_once()  # a snapshot cut off before its sync
    assert follower.cursor == 1
    assert follower.staleness() == float("inf")
    assert not follower.live(5.0)
    follower._follow_once()
    assert follower.staleness() == 0.0 and follower.live(5.0)
    assert follower.resume == "2.ff"


def test_the_cursor_sent_back_is_anchored_only_when_it_names_the_entry() -> None:
    clock = [500.0]
    body = _entry(1, "1.aa") + _entry(2, "7.cc")
    follower = _follower(lambda _r: httpx.Response(200, content=body), clock)
    follower._follow_once()
    assert follower.cursor == 2
    assert follower.resume == "2"  # the id named another seq: the bare seq


def test_a_feed_is_live_only_while_its_stream_is_connected() -> None:
    clock = [500.0]
    redial = threading.Event()
    release = threading.Event()
    calls: list[int] = []

    def answer(_request: httpx.Request) -> httpx.Response:
        calls.append(1)
        if len(calls) == 1:
            return httpx.Response(200, content=_entry(1, "1.aa") + SYNC)  # then it ends
        redial.set()
        release.wait(10)
        return httpx.Response(503)

    follower = _follower(answer, clock)
    follower.start()
    try:
        assert redial.wait(10), "the ended stream was not dialled again"
        assert follower.staleness() == 0.0  # heard from just now (the clock stands still)
        assert not follower.connected
        assert not follower.live(5.0)  # but no stream is connected
    finally:
        release.set()
        follower.stop()


def test_one_event_is_bounded_across_its_data_lines() -> None:
    parser = EventParser()
    assert list(parser.feed("data: " + "x" * 40_000)) == []
    with pytest.raises(ValueError, match="too large"):
        list(parser.feed("data: " + "x" * 40_000))
