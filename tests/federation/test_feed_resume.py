# Would fail if: the follower resumed past an entry it had not applied (or one past the
# last it applied), kept a higher cursor than the peer's after the peer went back in
# time, kept a refused bearer token, read a non-200 answer as the feed, kept its token
# past its expiry, read the feed without checking the peer's certificate, or followed
# a feed from a process that does not hold the lease (or no longer does).
"""Following one peer's revocation feed (tasklease.federation.revocations): where a
reconnection resumes, the sign-in token, and which process follows.

The peer is an in-process httpx mock transport: each GET of the stream answers the next
scripted body (server-sent events), so a reconnection is one more ``_follow_once``."""

from __future__ import annotations

import json
import ssl
from pathlib import Path
from typing import Any

import httpx
import pytest
from bundle_support import CTX, admin

from tasklease.core.broker import Broker
from tasklease.core.clock import ManualClock
from tasklease.core.config import Config
from tasklease.core.keys import KeyRing
from tasklease.core.records import RevocationRecord
from tasklease.federation import revocations
from tasklease.federation.revocations import (
    LEASE_TTL,
    FeedError,
    FeedFollowers,
    FeedSource,
    _Follower,
)
from tasklease.storage import MemoryStore

PEER = "a.example"
START = 1_800_000_000.0


def _entry(seq: int, ident: str | None = None) -> str:
    data = {"level": "task", "target": f"t-{seq}", "revoked_at": 1, "expires_at": 9e9, "seq": seq}
    head = "" if ident is None else f"id: {ident}\n"
    return f"{head}event: revocation\ndata: {json.dumps(data)}\n\n"


def _sync(cursor: int, ident: str | None = None) -> str:
    head = "" if ident is None else f"id: {ident}\n"
    return f"{head}event: sync\ndata: {json.dumps({'cursor': cursor})}\n\n"


class Peer:
    """The peer's sign-in and stream; ``answers`` are the stream's next answers."""

    def __init__(self) -> None:
        self.answers: list[tuple[int, str]] = []
        self.cursors: list[str | None] = []
        self.bearers: list[str] = []
        self.sign_ins = 0

    def handle(self, request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/app/auth":
            self.sign_ins += 1
            token = {"access_token": f"token-{self.sign_ins}", "expires_in": 600}
            return httpx.Response(200, json=token)
        self.cursors.append(request.url.params.get("cursor"))
        self.bearers.append(request.headers["authorization"])
        status, body = self.answers.pop(0)
        return httpx.Response(status, text=body, headers={"content-type": "text/event-stream"})


@pytest.fixture
def peer() -> Peer:
    return Peer()


@pytest.fixture
def follower(
    peer: Peer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> tuple[_Follower, list[RevocationRecord]]:
    credentials = tmp_path / "peer.json"
    credentials.write_text(json.dumps({"client_id": "app-1", "client_secret": "s" * 40}))
    credentials.chmod(0o600)
    broker = _broker(MemoryStore(), ManualClock(START), str(tmp_path))
    applied: list[RevocationRecord] = []

    def apply(domain: str, records: list[RevocationRecord], **_: Any) -> list[RevocationRecord]:
        assert domain == PEER
        for record in records:
            if record.target == "t-fails":
                raise RuntimeError("store unavailable")
        applied.extend(records)
        return list(records)

    monkeypatch.setattr(broker, "apply_federated_revocations", apply)
    one = _Follower(broker, FeedSource(PEER, "https://peer.example", "", str(credentials)))

    def client() -> httpx.Client:
        return httpx.Client(
            base_url="https://peer.example", transport=httpx.MockTransport(peer.handle)
        )

    monkeypatch.setattr(one, "_client", client)
    return one, applied


def _broker(store: Any, clock: ManualClock, data_dir: str) -> Broker:
    return Broker(
        Config(trust_domain="b.example", issuer="https://b.example", data_dir=data_dir),
        store,
        KeyRing.generate(),
        clock=clock,
        nonce_secret=b"n" * 32,
    )


Following = tuple[_Follower, list[RevocationRecord]]


def test_a_reconnection_resumes_after_the_last_entry_applied(
    peer: Peer, follower: Following
) -> None:
    one, applied = follower
    peer.answers = [(200, _entry(7, "7.fp7") + _entry(8)), (200, _entry(9, "9.fp9"))]
    one._follow_once()
    one._follow_once()
    # The first connection reads from the start; the next resumes after seq 8 (which
    # gave no id of its own), so entry 9 is read, not skipped.
    assert peer.cursors == [None, "8"]
    assert [r.seq for r in applied] == [7, 8, 9]
    assert (one.cursor, one.resume) == (9, "9.fp9")


def test_an_id_naming_another_entry_is_not_the_cursor(peer: Peer, follower: Following) -> None:
    one, _ = follower
    # An id that names a later seq than the entry's own would skip what lies between.
    peer.answers = [(200, _entry(7, "12.fp")), (200, "")]
    one._follow_once()
    one._follow_once()
    assert peer.cursors == [None, "7"]


def test_an_entry_not_applied_is_read_again(peer: Peer, follower: Following) -> None:
    one, applied = follower
    failing = _entry(8).replace('"t-8"', '"t-fails"')
    peer.answers = [(200, _entry(7, "7.fp") + failing), (200, "")]
    with pytest.raises(RuntimeError):
        one._follow_once()
    one._follow_once()
    assert [r.seq for r in applied] == [7]
    assert peer.cursors == [None, "7.fp"]  # entry 8 is asked for again


def test_the_peers_cursor_is_taken_even_below_ours(peer: Peer, follower: Following) -> None:
    one, _ = follower
    # The peer's store went back in time: it answers a smaller cursor, and entries it
    # writes past it must be read, not skipped as already seen.
    peer.answers = [(200, _entry(8, "8.old")), (200, _sync(3, "3.new")), (200, "")]
    for _ in range(3):
        one._follow_once()
    assert peer.cursors == [None, "8.old", "3.new"]
    assert one.cursor == 3


def test_a_refused_token_is_dropped_and_the_follower_signs_in_again(
    peer: Peer, follower: Following
) -> None:
    one, _ = follower
    peer.answers = [(401, ""), (200, "")]
    with pytest.raises(FeedError, match="HTTP 401"):
        one._follow_once()
    one._follow_once()
    assert peer.sign_ins == 2
    assert peer.bearers == ["Bearer token-1", "Bearer token-2"]


@pytest.mark.parametrize("status", [204, 302, 500])
def test_an_answer_other_than_200_is_not_read_as_the_feed(
    peer: Peer, follower: Following, status: int
) -> None:
    one, applied = follower
    peer.answers = [(status, _entry(7, "7.fp"))]
    with pytest.raises(FeedError, match=f"HTTP {status}"):
        one._follow_once()
    assert applied == [] and one.resume is None
    assert peer.sign_ins == 1  # the token is kept: only a 401 drops it


def test_the_token_is_kept_until_before_it_expires_then_renewed(
    peer: Peer, follower: Following, monkeypatch: pytest.MonkeyPatch
) -> None:
    one, _ = follower
    now = [1000.0]
    monkeypatch.setattr(one, "_monotonic", lambda: now[0])
    peer.answers = [(200, ""), (200, ""), (200, "")]
    one._follow_once()
    now[0] += 539.0  # 600 s token, renewed 60 s early
    one._follow_once()
    assert peer.sign_ins == 1
    now[0] += 1.0
    one._follow_once()
    assert peer.sign_ins == 2
    assert peer.bearers == ["Bearer token-1", "Bearer token-1", "Bearer token-2"]


def test_the_peers_certificate_is_checked_with_the_records_ca(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    asked: list[str] = []

    def context(pem: str) -> ssl.SSLContext:
        asked.append(pem)
        return ssl.create_default_context()

    monkeypatch.setattr(revocations, "tls_context", context)
    broker = _broker(MemoryStore(), ManualClock(START), str(tmp_path))
    source = FeedSource(PEER, "https://peer.example", "PEM", "")
    with _Follower(broker, source)._client():
        pass
    assert asked == ["PEM"]


def _declare(broker: Broker) -> None:
    broker.federation.add(
        admin(broker).claims,
        trust_domain=PEER,
        bundle_endpoint_url=f"https://{PEER}/v1/federation/bundle",
        revocation_feed="https://127.0.0.1:1",
        feed_credentials_file="peer.json",
        ctx=CTX,
    )


def test_only_the_holder_of_the_lease_follows_and_stops_when_it_loses_it(
    tmp_path: Path,
) -> None:
    store, clock = MemoryStore(), ManualClock(START)
    one, two = (_broker(store, clock, str(tmp_path)) for _ in range(2))
    _declare(one)
    first, second = FeedFollowers(), FeedFollowers()
    try:
        assert first.tick(one) == 1 and first.following() == [("default", PEER)]
        assert second.tick(two) == 0 and second.following() == []
        clock.advance(LEASE_TTL + 1)  # `one` stopped ticking: `two` takes the lease over
        assert second.tick(two) == 1 and second.following() == [("default", PEER)]
        assert first.tick(one) == 0 and first.following() == []
    finally:
        first.close()
        second.close()


def test_a_stopped_follower_applies_nothing_more(
    peer: Peer, follower: Following, monkeypatch: pytest.MonkeyPatch
) -> None:
    one, applied = follower
    peer.answers = [(200, _entry(7, "7.fp") + _entry(8, "8.fp"))]
    real = one.broker.apply_federated_revocations

    def apply_then_stop(domain: str, records: list[RevocationRecord], **kw: Any) -> Any:
        one.stop()  # the lease went to another process while this entry was applied
        return real(domain, records, **kw)

    monkeypatch.setattr(one.broker, "apply_federated_revocations", apply_then_stop)
    one._follow_once()
    assert [r.seq for r in applied] == [7] and one.resume == "7.fp"


def test_a_follower_is_restarted_when_its_domains_feed_changes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    started: list[FeedSource] = []
    stopped: list[FeedSource] = []

    class Recorded(_Follower):
        def start(self) -> None:
            started.append(self.source)

        def stop(self) -> None:
            stopped.append(self.source)

    monkeypatch.setattr(revocations, "_Follower", Recorded)
    broker = _broker(MemoryStore(), ManualClock(START), str(tmp_path))
    followers = FeedFollowers()
    _declare(broker)
    followers.tick(broker)
    followers.tick(broker)  # the same feed: the same follower
    broker.federation.add(
        admin(broker).claims,
        trust_domain=PEER,
        bundle_endpoint_url=f"https://{PEER}/v1/federation/bundle",
        revocation_feed="https://feed.a.example",
        feed_credentials_file="peer.json",
        ctx=CTX,
    )
    followers.tick(broker)
    assert [s.base_url for s in started] == ["https://127.0.0.1:1", "https://feed.a.example"]
    assert [s.base_url for s in stopped] == ["https://127.0.0.1:1"]
    assert followers.following() == [("default", PEER)]
