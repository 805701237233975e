"""Caller text cut to a length before it reaches an audit event or an error detail keeps
no start of a secret the cut goes through (``auditformat.clipped``).

A plain slice can leave 63 of a 64-hex secret's characters: no longer the shape the
sanitizer redacts, so they would be stored and sent back in clear. Each test places a
secret where the old slice would have cut it one character short, and looks for any
40-character run of it in the event and the answer.
"""

from __future__ import annotations

import base64
import json
import secrets
from typing import Any

import pytest

from tasklease.core.attestors._jwt import ALGORITHMS, AttestationRefused, verify_jwt
from tasklease.core.auditformat import AuditEntry, sanitize
from tasklease.core.broker import Broker
from tasklease.core.errors import TaskleaseError
from tasklease.core.kernel import denial_entry
from tasklease.core.records import AuditQuery

HEX = "0123456789abcdef"


def _secret() -> str:
    secret = secrets.token_hex(32)
    assert len(secret) == 64
    return secret


def _ending_at(limit: int, head: str, before: str = "") -> str:
    """``head`` padded with ``z`` so that a secret written after it and ``before`` starts
    63 characters ahead of ``limit``: a cut at ``limit`` keeps all of it but its last
    character."""
    pad = limit - 63 - len(head) - len(before)
    assert pad >= 0
    return head + "z" * pad


def _leaks(text: str, secret: str) -> bool:
    """Any 40-character run of ``secret`` in ``text``."""
    return any(secret[i : i + 40] in text for i in range(len(secret) - 39))


def _events(broker: Broker, event_type: str) -> list[Any]:
    events, _ = broker.audit_events(AuditQuery(event_type=event_type, limit=50))
    assert events, f"no {event_type} event"
    return events


def _stored(events: list[Any]) -> str:
    return " ".join(f"{e.agent_id} {e.task_id} {e.detail}" for e in events)


def test_refused_app_token_scopes_keep_no_cut_secret(broker: Broker, kit: Any) -> None:
    admin = kit.admin(broker).claims
    app, client_secret = broker.register_app(
        admin, name="billing", scopes=["read:x:*"], token_ttl=None, ctx=kit.ctx
    )
    secret = _secret()
    # The refused scopes are joined with spaces and cut at 200 characters; the secret is
    # pasted into the last one's identifier.
    filler = _ending_at(200, "q:r:", " read:data:")
    scope = f"{filler} read:data:{secret}"
    assert scope.index(secret) == 200 - 63
    with pytest.raises(TaskleaseError) as refused:
        broker.app_auth(app.client_id, client_secret, kit.ctx, scope=scope)
    assert "q:r:zz" in refused.value.detail  # the refused scopes are still named
    assert not _leaks(refused.value.detail, secret)
    stored = _stored(_events(broker, "app_auth_failed"))
    assert "scope_beyond_app_token" in stored
    assert not _leaks(stored, secret), stored


def test_refused_delegation_target_keeps_no_cut_secret(broker: Broker, kit: Any) -> None:
    agent = kit.register(broker)
    secret = _secret()
    head = f"{agent.sub}-"
    target = f"{_ending_at(256, head)}{secret}"
    # An unknown target: refused, the target named in the detail, cut at 256 characters.
    with pytest.raises(TaskleaseError) as refused:
        broker.delegate(
            agent.claims, delegate_to=target, scope=["read:data:1"], ttl=None, ctx=kit.ctx
        )
    assert not _leaks(refused.value.detail, secret)
    stored = _stored(_events(broker, "delegation_denied"))
    assert f"target={head}zz" in stored
    assert not _leaks(stored, secret), stored


def test_refused_resume_agent_id_keeps_no_cut_secret(broker: Broker, kit: Any) -> None:
    secret = _secret()
    agent_id = f"{_ending_at(512, 'spiffe://x/agent/')}{secret}"
    with pytest.raises(TaskleaseError) as refused:
        broker.resume(
            agent_id=agent_id,
            nonce="00" * 32,  # never issued: refused before any lookup
            signature=base64.b64encode(bytes(64)).decode(),
            ctx=kit.ctx,
        )
    assert not _leaks(refused.value.detail, secret)
    events = _events(broker, "agent_resume_denied")
    assert events[-1].agent_id.startswith("spiffe://x/agent/zz")
    assert not _leaks(_stored(events), secret), _stored(events)


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def test_unknown_evidence_kid_keeps_no_cut_secret() -> None:
    secret = _secret()
    kid = f"{_ending_at(64, '')}{secret}"  # the kid is cut at 64 characters
    header = _b64url(json.dumps({"alg": "ES256", "kid": kid}).encode())
    token = f"{header}.{_b64url(b'{}')}.{_b64url(bytes(64))}"
    assert "ES256" in ALGORITHMS
    with pytest.raises(AttestationRefused) as refused:
        verify_jwt(token, {}, algorithms=["ES256"])
    assert "not among the issuer's keys" in str(refused.value)
    assert not _leaks(str(refused.value), secret)


def test_a_refusals_detail_cut_to_fit_its_denial_id_keeps_no_cut_secret() -> None:
    # Every refusal's detail is cut to 1,800 characters before its denial id is added.
    secret = _secret()
    entry = AuditEntry("token_auth_failed", detail=f"{_ending_at(1800, 'why: ')}{secret}")
    out = sanitize(denial_entry(entry, "den_0123456789abcdef").detail)
    assert out.startswith("why: zz") and out.endswith(" | denial=den_0123456789abcdef")
    assert not _leaks(out, secret)


def test_a_malformed_scope_is_named_back_only_when_it_cannot_be_a_secret() -> None:
    """A bare 64-hex secret is not a scope: the refusal says which field, not the value."""
    from tasklease.core.scopes import validate_scopes

    secret = _secret()
    with pytest.raises(TaskleaseError) as refused:
        validate_scopes(["read:data:1", secret], field="scope")
    assert secret[:40] not in refused.value.detail and "<invalid>" in refused.value.detail
    with pytest.raises(TaskleaseError) as named:
        validate_scopes(["read data"], field="scope")
    assert "'read data'" in named.value.detail
