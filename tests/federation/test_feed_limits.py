# Would fail if: an entry of a federated domain's feed that is too long to be ours were
# made ours anyway: our own feed's event for it is then too large for our verifiers,
# which reconnect from the same cursor for ever and go stale.
"""A federated domain's revocation feed entry too long to be ours: read by our follower
(tasklease.federation.revocations), skipped by core.foreign.converted, and our verifiers
stay current."""

from __future__ import annotations

import logging
import time

import pytest
from bundle_support import CTX, admin, make_broker, serve_broker, wait_for

from tasklease.core.clock import SystemClock
from tasklease.core.records import MAX_TARGET, RevocationRecord
from tasklease.core.tokens import KIND_AGENT, mint
from tasklease.federation.revocations import _MAX_LINE, _entry, parse_event
from tasklease.http.feed import _event
from tasklease.rules.bundle import TrustBundle, serialize_bundle
from tasklease.verify import AppCredentials, Verifier

A, B = "a.example", "b.example"
AUDIENCE = "svc-a"


def test_an_entry_too_long_to_be_ours_is_skipped_and_verifiers_stay_current(
    caplog: pytest.LogCaptureFixture,
) -> None:
    a = make_broker(A, clock=SystemClock())
    b = make_broker(B, clock=SystemClock(), audience=(AUDIENCE,))
    ring = a.keyring
    keys = {kid: bytes(key) for kid in ring.kids() if (key := ring.verify_key(kid)) is not None}
    b.federation.add(
        admin(b).claims,
        trust_domain=A,
        bundle=serialize_bundle(TrustBundle(A, 1, 60, keys)).decode(),
        scope_map=[["read:data:*", "read:data:*"]],
        scope_ceiling=None,
        max_ttl=120,
        ctx=CTX,
    )
    app, secret = b.register_app(
        admin(b).claims, name="rs", scopes=["read:data:*"], token_ttl=None, ctx=CTX
    )
    now = int(time.time())
    # What A's stream sends: a task-level entry whose line just fits our follower's limit,
    # then an ordinary one.
    empty = _event(RevocationRecord("task", "", now, now + 3600.0, 7)).decode()
    room = _MAX_LINE - len(empty.split("\n")[2])
    stream = [
        _event(RevocationRecord("task", "t" * room, now, now + 3600.0, 7)),
        _event(RevocationRecord("task", "t-next", now, now + 3600.0, 8)),
    ]
    with serve_broker(b) as served:
        verifier = Verifier(
            served.url,
            audience=AUDIENCE,
            issuer=b.config.issuer,
            credentials=AppCredentials(app.client_id, secret),
            max_feed_staleness=3.0,
            critical_scopes=["write:data:*"],
        )
        with verifier:
            assert verifier.start(wait=10)
            connections = verifier.stats()["feed_connections"]
            written = []
            with caplog.at_level(logging.WARNING, logger="tasklease.federation"):
                for wire in stream:
                    lines = wire.decode().split("\n")
                    assert max(map(len, lines)) <= _MAX_LINE
                    (event,) = [e for e in parse_event(iter(lines)) if e.kind == "revocation"]
                    record, sent_at = _entry(event.data)
                    written += b.apply_federated_revocations(A, [record], sent_at=sent_at)
            # The verifier reads up to the last entry on the connection it has.
            (ours,) = b.store.find_revocations([("chain", f"fed:{A}:task:t-next")])
            wait_for(lambda: (verifier.stats()["feed_cursor"] or 0) >= ours.seq)
            stats = verifier.stats()
            assert stats["feed_connections"] == connections
            assert stats["feed_live"]
            assert [w.target for w in written] == [ours.target]
            assert all(len(r.target) <= MAX_TARGET for r in b.store.load_revocations(now))
            assert "skipped a task-level entry" in caplog.text
            token, _ = mint(
                b.keyring,
                kind=KIND_AGENT,
                iss=b.config.issuer,
                sub=f"spiffe://{B}/agent/orch/task/0123456789abcdef",
                aud=(AUDIENCE,),
                iat=int(time.time()),
                ttl=120,
                scope=("read:data:1",),
                client_id=app.client_id,
                task_id="task",
                orch_id="orch",
            )
            assert verifier.verify(token).scope == ("read:data:1",)
