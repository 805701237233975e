"""An in-process broker on a memory store and a manual clock, and the registration
ceremony with workload evidence (the challenge signed by a fresh Ed25519 key)."""

from __future__ import annotations

import base64
from typing import Any

from nacl.signing import SigningKey

from tasklease.core.broker import Broker, IssuedToken, RequestContext
from tasklease.core.clock import ManualClock
from tasklease.core.config import Config
from tasklease.core.keys import KeyRing
from tasklease.core.store import AuditQuery
from tasklease.core.tokens import ADMIN_SCOPES, KIND_ADMIN, mint
from tasklease.core.validation import TokenRejected
from tasklease.storage import MemoryStore

START = 1_800_000_000.0
CTX = RequestContext(request_id="req-attest", remote="127.0.0.1", path="/v1/register")
ISSUER = "https://broker.example"


def b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


def make_broker(**config: Any) -> Broker:
    return Broker(
        Config(trust_domain="broker.example", issuer=ISSUER, **config),
        MemoryStore(),
        KeyRing.generate(),
        clock=ManualClock(START),
        nonce_secret=b"n" * 32,
    )


def admin(broker: Broker) -> Any:
    """Admin claims as ``admin_auth`` would mint them (no argon2 in these tests)."""
    _token, claims = mint(
        broker.keyring,
        kind=KIND_ADMIN,
        iss=broker.config.issuer,
        sub="admin",
        aud=broker.config.audience,
        iat=int(broker.clock.now()),
        ttl=300,
        scope=(*ADMIN_SCOPES, "admin:keys:*"),
        client_id="admin",
    )
    return claims


def register(
    broker: Broker,
    scope: list[str],
    *,
    attestation: dict[str, Any] | None = None,
    launch_token: str | None = None,
    declared: dict[str, str] | None = None,
    task: str = "task-1",
) -> IssuedToken:
    key = SigningKey.generate()
    nonce, _ = broker.challenge()
    signature = key.sign(bytes.fromhex(nonce)).signature
    return broker.register(
        launch_token=launch_token,
        nonce=nonce,
        public_key=b64(bytes(key.verify_key)),
        signature=b64(signature),
        orch_id="orch-1",
        task_id=task,
        requested_scope=scope,
        ctx=CTX,
        attestation=attestation,
        declared=declared,
    )


def audit_detail(broker: Broker, denial_id: str) -> list[str]:
    """The audit events naming ``denial_id`` (exactly one for every refusal)."""
    broker.audit.flush() if hasattr(broker.audit, "flush") else None
    events, _ = broker.audit_events(AuditQuery(limit=1000))
    return [e.detail for e in events if denial_id in e.detail]


def valid(broker: Broker, token: str) -> bool:
    """Whether the broker takes ``token`` now."""
    try:
        broker.validate(token, ctx=CTX)
    except TokenRejected:
        return False
    return True
