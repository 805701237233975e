"""A verifier takes the broker's cursor even when it is smaller than its own: after the
broker's database went back in time, the broker answers a snapshot and the store's last
number, and numbers above it are handed out again (decision 133). Kept at its own larger
cursor, the verifier would skip them on its next reconnection."""

from __future__ import annotations

import json
import threading

import httpx

from tasklease.core.revocation import RevocationIndex
from tasklease.verify._feed import FeedFollower


def _revocation(seq: int, target: str) -> str:
    entry = {"seq": seq, "level": "token", "target": target, "revoked_at": 1, "expires_at": 9e9}
    return f"id: {seq}\nevent: revocation\ndata: {json.dumps(entry)}\n\n"


def _sync(cursor: int) -> str:
    return (
        f"id: {cursor}\nevent: sync\ndata: {json.dumps({'cursor': cursor, 'server_time': 1})}\n\n"
    )


def test_the_verifier_steps_back_to_the_cursor_the_broker_gives() -> None:
    asked: list[str | None] = []
    answers = [
        _revocation(5, "jti-5") + _sync(5),  # the last stream before the failover
        _revocation(2, "jti-2-again") + _sync(2),  # a snapshot: the store's last is 2
        _sync(2),
    ]
    done = threading.Event()

    def handler(request: httpx.Request) -> httpx.Response:
        asked.append(request.url.params.get("cursor"))
        if len(asked) >= len(answers):
            done.set()
        body = answers[min(len(asked), len(answers)) - 1]
        return httpx.Response(200, text=body, headers={"content-type": "text/event-stream"})

    index = RevocationIndex()
    follower = FeedFollower(
        httpx.Client(transport=httpx.MockTransport(handler), base_url="http://broker"),
        index,
        token_source=lambda: "t",
        forget_token=lambda: None,
        read_timeout=5,
        on_revocation=lambda: None,
        housekeeping=lambda: None,
        max_backoff=0.05,
    )
    follower.start()
    try:
        assert done.wait(10)
    finally:
        follower.stop()
    assert asked[:3] == [None, "5", "2"]
    assert len(index) == 2  # what it held stays: jti-5 and jti-2-again
