# Would fail if: the follower read a credential file others can read, or one not in the
# tenant's directory, misread the feed's events, or kept following a tenant no longer
# ticked (a removed tenant) or a feed no longer declared.
"""The revocation-feed follower's parts that need no peer: credentials, events, and which
feeds a process follows (tasklease.federation.revocations)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from bundle_support import CTX, admin, make_broker

from tasklease.federation.revocations import (
    FeedError,
    FeedFollowers,
    credentials_dir,
    parse_event,
    read_credentials,
)


def test_credentials_come_from_a_private_json_file(tmp_path: Path) -> None:
    path = tmp_path / "a.json"
    path.write_text(json.dumps({"client_id": "app-1", "client_secret": "s" * 40}))
    path.chmod(0o644)
    with pytest.raises(FeedError, match="0600"):
        read_credentials(str(path))
    path.chmod(0o600)
    assert read_credentials(str(path)) == ("app-1", "s" * 40)
    path.write_text("client_id=app-1")
    with pytest.raises(FeedError, match="JSON object"):
        read_credentials(str(path))
    with pytest.raises(FeedError, match="does not exist"):
        read_credentials(str(tmp_path / "missing.json"))
    link = tmp_path / "link.json"
    link.symlink_to(path)
    with pytest.raises(FeedError, match="symlink"):
        read_credentials(str(link))


def test_events_are_read_as_the_feed_writes_them() -> None:
    lines = [
        "retry: 1000",
        "",
        "id: 7",
        "event: revocation",
        'data: {"level":"task","target":"t","revoked_at":1,"expires_at":2.5,"seq":7}',
        "",
        ": keepalive",
        "",
        "event: sync",
        'data: {"cursor": 7, "server_time": 3.0}',
        "",
    ]
    events = list(parse_event(iter(lines)))
    assert [e.kind for e in events] == ["revocation", "", "sync"]
    assert json.loads(events[0].data)["seq"] == 7
    with pytest.raises(FeedError):
        list(parse_event(iter(["data: " + "x" * 70_000])))


def _declare(broker: Any, domain: str, feed: bool = True) -> None:
    extra: dict[str, Any] = (
        {"revocation_feed": "https://127.0.0.1:1", "feed_credentials_file": "peer.json"}
        if feed
        else {}
    )
    broker.federation.add(
        admin(broker).claims,
        trust_domain=domain,
        bundle_endpoint_url=f"https://{domain}/v1/federation/bundle",
        ctx=CTX,
        **extra,
    )


def test_a_process_follows_what_is_declared_while_it_is_ticked(tmp_path: Path) -> None:
    now = [0.0]
    followers = FeedFollowers(monotonic=lambda: now[0])
    one = make_broker("one.example", data_dir=str(tmp_path))
    two = make_broker("two.example", data_dir=str(tmp_path))
    assert credentials_dir(one) == tmp_path / "federation"
    try:
        _declare(one, "a.example")
        _declare(one, "b.example", feed=False)
        assert followers.tick(one) == 1
        assert followers.following() == [("default", "a.example")]
        _declare(one, "a.example", feed=False)  # the feed is no longer declared
        assert followers.tick(one) == 0 and followers.following() == []
        _declare(one, "a.example")
        _declare(two, "c.example")
        followers.tick(one)
        followers.tick(two)
        assert len(followers.following()) == 2
        now[0] = 60.0  # `one` is ticked no more (its tenant was removed): its feeds stop
        followers.tick(two)
        assert followers.following() == [("default", "c.example")]
    finally:
        followers.close()
