"""A revocation feed entry's ``expires_at`` is read within bounds
(``core.revocation.feed_time``), by the verifier and by a broker following a federated
domain's feed. JSON integers are read exactly: an ``expires_at`` of 400 digits made
``float(expires_at)`` raise ``OverflowError``, so the revocation it carried was never
enforced, nor any after it (the follower read the same entry again at every
reconnection). A time past the year 9999 now keeps the entry for ever; NaN, which the
decoder takes, is refused like any other entry that is no number."""

from __future__ import annotations

import json
import math

import httpx
import pytest

from tasklease.core.revocation import RevocationIndex
from tasklease.federation.revocations import FeedError, _entry
from tasklease.verify._feed import FeedFollower
from tasklease.verify._revocations import parse_entry

ABSURD = 10**400


def _fields(expires_at: object, seq: int = 1, target: str = "jti-1") -> dict[str, object]:
    return {
        "level": "token",
        "target": target,
        "revoked_at": 1,
        "expires_at": expires_at,
        "seq": seq,
    }


def test_a_verifier_keeps_an_entry_whose_expiry_no_float_holds() -> None:
    assert parse_entry(_fields(ABSURD)).expires_at == math.inf
    assert parse_entry(_fields(-ABSURD)).expires_at == 0.0
    assert parse_entry(_fields(9e9)).expires_at == 9e9
    for malformed in (float("nan"), True, "9e9", None):
        with pytest.raises(ValueError, match="expires_at"):
            parse_entry(_fields(malformed))


def test_the_verifier_enforces_the_entry_and_those_after_it() -> None:
    stream = (
        "".join(
            f"id: {seq}\nevent: revocation\ndata: {json.dumps(_fields(exp, seq, f'jti-{seq}'))}\n\n"
            for seq, exp in ((1, ABSURD), (2, 9e9))
        )
        + f"id: 2\nevent: sync\ndata: {json.dumps({'cursor': 2})}\n\n"
    )

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, text=stream, headers={"content-type": "text/event-stream"})

    index = RevocationIndex()
    client = httpx.Client(transport=httpx.MockTransport(handler), base_url="http://broker")
    follower = FeedFollower(
        client,
        index,
        token_source=lambda: "t",
        forget_token=lambda: None,
        read_timeout=5,
        on_revocation=lambda: None,
        housekeeping=lambda: None,
    )
    follower.start()
    try:
        synced = follower.wait_synced(5)
    finally:
        follower.stop()
        client.close()
    assert synced
    assert index.revoked_at("token", "jti-1") == 1
    assert index.revoked_at("token", "jti-2") == 1


def test_a_federated_entry_whose_times_no_float_holds_is_read() -> None:
    data = json.dumps({**_fields(ABSURD), "sent_at": ABSURD})
    record, sent_at = _entry(data)
    assert (record.target, record.expires_at, sent_at) == ("jti-1", math.inf, math.inf)
    with pytest.raises(FeedError, match="expires_at"):
        _entry(json.dumps(_fields(float("nan"))))
