# Would fail if: the follower read a credential file others can read, or one not in the
# tenant's directory, misread the feed's events, or kept following a tenant no longer
# ticked (a removed tenant) or a feed no longer declared.
"""The revocation-feed follower's parts that need no peer: credentials, events, and which
feeds a process follows (tasklease.federation.revocations)."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from bundle_support import CTX, admin, make_broker

from tasklease.core.broker import Broker
from tasklease.core.clock import ManualClock
from tasklease.core.config import Config
from tasklease.core.keys import KeyRing
from tasklease.federation.revocations import (
    FeedError,
    FeedFollowers,
    FeedSource,
    _entry,
    _Follower,
    credentials_dir,
    feed_source,
    parse_event,
    read_credentials,
)
from tasklease.storage import MemoryStore


def test_credentials_come_from_a_private_json_file(tmp_path: Path) -> None:
    path = tmp_path / "a.json"
    path.write_text(json.dumps({"client_id": "app-1", "client_secret": "s" * 40}))
    path.chmod(0o644)
    with pytest.raises(FeedError, match="0600"):
        read_credentials(str(path))
    path.chmod(0o600)
    assert read_credentials(str(path)) == ("app-1", "s" * 40)
    path.write_text(json.dumps({"client_id": "", "client_secret": "s" * 40}))
    with pytest.raises(FeedError, match="client_id"):
        read_credentials(str(path))
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
    with pytest.raises(FeedError, match="line too long"):  # whatever field it is
        list(parse_event(iter(["event: " + "x" * 70_000])))


@pytest.mark.parametrize(
    "entry",
    [
        {"level": 1, "target": "t", "revoked_at": 1, "expires_at": 2, "seq": 7},
        {"level": "task", "target": None, "revoked_at": 1, "expires_at": 2, "seq": 7},
        {"level": "task", "target": "t", "revoked_at": "1", "expires_at": 2, "seq": 7},
        {"level": "task", "target": "t", "revoked_at": 1.5, "expires_at": 2, "seq": 7},
    ],
)
def test_a_feed_entry_of_the_wrong_shape_is_a_feed_error(entry: dict[str, Any]) -> None:
    with pytest.raises(FeedError):
        _entry(json.dumps(entry))


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


def test_a_tenants_feed_credentials_are_read_from_its_own_directory_only(
    tmp_path: Path,
) -> None:
    store = MemoryStore().for_tenant("acme")
    acme = Broker(
        Config(trust_domain="acme.example", issuer="https://acme.example", data_dir=str(tmp_path)),
        store,
        KeyRing.generate(),
        clock=ManualClock(1_800_000_000.0),
        nonce_secret=b"n" * 32,
    )
    directory = credentials_dir(acme)
    assert directory == tmp_path / "federation" / "tenants" / "acme"
    _declare(acme, "a.example")
    record = acme.federation.record("a.example")
    source = feed_source(record, directory)
    assert source is not None and source.credentials_file == str(directory / "peer.json")
    # A record naming anything but a file of that directory follows nothing.
    for name in ("../peer.json", "tenants/other/peer.json", ".", ".."):
        assert feed_source(replace(record, feed_credentials_file=name), directory) is None


def test_the_feed_is_read_over_https_only_without_redirects_or_proxies(tmp_path: Path) -> None:
    broker = make_broker("b.example")
    for url in ("http://peer.example", "https://user:pw@peer.example", "https://"):
        follower = _Follower(broker, FeedSource("a.example", url, "", str(tmp_path / "p.json")))
        with pytest.raises(FeedError, match="https URL without userinfo"):
            follower._client()
    follower = _Follower(broker, FeedSource("a.example", "https://peer.example", "", ""))
    with follower._client() as client:
        assert client.follow_redirects is False and client.trust_env is False
