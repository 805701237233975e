"""A renewal checked before its agent's release committed, written after it, issues
nothing on PostgreSQL either: the session's renewal count is raised only while the
session is active (one statement, decided by the row's latest committed version)."""

from __future__ import annotations

import base64

import pytest
from nacl.signing import SigningKey

from tasklease.core.broker import Broker, RequestContext
from tasklease.core.clock import ManualClock
from tasklease.core.config import Config
from tasklease.core.errors import TaskleaseError
from tasklease.core.keys import KeyRing
from tasklease.core.passwords import hash_secret
from tasklease.core.pending import complete
from tasklease.core.records import AuditQuery
from tasklease.core.tokens import ADMIN_SCOPES, KIND_ADMIN, mint
from tasklease.rules.messages import heartbeat_signing_input
from tasklease.storage.postgres import PostgresStore

CTX = RequestContext(request_id="req-pg", remote="127.0.0.1", path="/v1/test")


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


def test_a_renewal_that_loses_the_race_with_the_release_issues_nothing(pg_url: str) -> None:
    clock = ManualClock(1_800_000_000.0)
    store = PostgresStore(pg_url, pool_max=2)
    broker = Broker(
        Config(admin_secret_hash=hash_secret("an admin secret long enough to pass")),
        store,
        KeyRing.generate(),
        clock=clock,
        nonce_secret=b"p" * 32,
    )
    try:
        cfg = broker.config
        _, admin = mint(
            broker.keyring,
            kind=KIND_ADMIN,
            iss=cfg.issuer,
            sub="admin",
            aud=cfg.audience,
            iat=int(clock.now()),
            ttl=300,
            scope=ADMIN_SCOPES,
            client_id="admin",
        )
        launch, _ = broker.create_launch_token(
            admin,
            agent_name="pg-agent",
            allowed_scope=["read:data:*"],
            max_ttl=None,
            single_use=None,
            ttl=None,
            ctx=CTX,
        )
        key = SigningKey.generate()

        def signed(nonce: str) -> str:
            return _b64(key.sign(bytes.fromhex(nonce)).signature)

        nonce, _ = broker.challenge()
        first = broker.register(
            launch_token=launch,
            nonce=nonce,
            public_key=_b64(bytes(key.verify_key)),
            signature=signed(nonce),
            orch_id="orch-1",
            task_id="task-1",
            requested_scope=["read:data:*"],
            ctx=CTX,
        )
        clock.advance(2)
        nonce, _ = broker.challenge()
        resumed = broker.resume(
            agent_id=first.claims.sub, nonce=nonce, signature=signed(nonce), ctx=CTX
        )
        clock.advance(1)
        claims = broker.authenticate(f"Bearer {first.token}", CTX)
        pending = broker.prepare_renew(claims, CTX)  # checked while the session is active
        now, proof = int(clock.now()), "p" * 20
        message = heartbeat_signing_input(first.claims.sub, resumed.claims.jti, now, proof, True)
        session = broker.heartbeat(
            resumed.claims,
            timestamp=now,
            jti=proof,
            signature=_b64(key.sign(message).signature),
            done=True,
            ctx=CTX,
        )
        assert session.state == "released"
        with pytest.raises(TaskleaseError, match="token verification failed") as info:
            complete(broker.kernel, pending)
        events, _ = store.query_audit(AuditQuery(limit=1000))
        (event,) = [e for e in events if f"denial={info.value.denial_id}" in e.detail]
        assert "released meanwhile" in event.detail
    finally:
        store.close()
