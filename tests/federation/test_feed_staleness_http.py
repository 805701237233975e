# Would fail if: a broker went on exchanging a federated domain's tokens while that
# domain's revocation feed was down, past federation_feed_max_staleness.
"""A broker that follows a federated domain's revocation feed stops exchanging that
domain's tokens once the feed has been silent longer than
``federation_feed_max_staleness`` (10 s here), as separate ``tasklease serve`` processes
over HTTPS: A's operator removes the app B follows A's feed as, so B hears nothing more
from A; B's exchanges of A's tokens are then answered 503 with a ``denial_id``, while B's
own agents are untouched."""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import pytest
from bridge_support import GRANT, Peer, dump, exchange, start_peer, stop_peer, wait_until
from bundle_support import CA, make_ca

pytestmark = pytest.mark.slow

A, B = "a.example", "b.example"
ACCESS = "urn:ietf:params:oauth:token-type:access_token"


@pytest.fixture(scope="module")
def peers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Peer, Peer]]:
    ca: CA = make_ca(tmp_path_factory.mktemp("pki"), name="feed staleness test CA")
    base = tmp_path_factory.mktemp("staleness")
    started: list[Peer] = []
    try:
        started.append(start_peer(base, A, ca))
        bound = {"TASKLEASE_FEDERATION_FEED_MAX_STALENESS": "10"}
        started.append(start_peer(base, B, ca, env=bound))
        yield started[0], started[1]
    finally:
        for peer in started:
            stop_peer(peer)


def _attempt(b: Peer, subject: str, actor: str) -> httpx.Response:
    form = {
        "grant_type": GRANT,
        "subject_token": subject,
        "subject_token_type": ACCESS,
        "actor_token": actor,
        "actor_token_type": ACCESS,
    }
    return b.http.post("/v1/oauth/token", data=form)


def test_a_silent_feed_holds_the_domains_tokens(peers: tuple[Peer, Peer]) -> None:
    a, b = peers
    app = json.loads(
        a.cli("app", "register", "peer-b", "--scope", "read:feed:revocations", "--json").stdout
    )
    directory = b.running.data_dir / "federation"
    directory.mkdir(mode=0o700, exist_ok=True)
    credentials = {"client_id": app["client_id"], "client_secret": app["client_secret"]}
    dump(directory / "a-feed.json", credentials)
    b.cli(
        "federation", "add", A, "--bundle-endpoint", f"{a.url}/v1/federation/bundle",
        "--ca-file", str(a.ca.path), "--map", "read:data:*=read:data:*",
        "--revocation-feed", a.url, "--feed-credentials", "a-feed.json",
    )  # fmt: skip
    alice = a.register(["read:data:*"], "t-alice")
    bob = b.register(["read:data:*"], "t-bob")
    subject = a.for_domain(alice.access_token, b)
    # Once B has fetched A's bundle and heard A's feed current, the exchange goes through.
    wait_until(lambda: _attempt(b, subject, bob.access_token).status_code == 200, timeout=30)
    shown = json.loads(b.cli("federation", "show", A, "--json").stdout)
    assert shown["feed_heard_at"], shown  # when B last heard A's feed current
    assert "feed heard at" in b.cli("federation", "show", A).stdout

    # A's operator removes the app: its stream ends, and B cannot sign in to the feed again.
    a.cli("app", "remove", app["app_id"])

    def held() -> httpx.Response | None:
        answer = _attempt(b, subject, bob.access_token)
        return answer if answer.status_code == 503 else None

    refused = wait_until(held, timeout=30, step=0.5)
    body = refused.json()
    assert body["denial_id"].startswith("den_") and "not current" in body["detail"]
    assert refused.headers["retry-after"]
    events = b.cli("audit", "events", "--json", "--outcome", "denied", "--limit", "1000").stdout
    [event] = [json.loads(line) for line in events.splitlines() if body["denial_id"] in line]
    assert "its revocation feed was last heard current" in event["detail"]
    # B's own agents are not A's: nothing of theirs is held.
    assert b.valid(bob.access_token)
    narrowed = exchange(b, bob.access_token, audience="https://rs.b.example")
    assert narrowed["access_token"]
