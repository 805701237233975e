"""Who may count a certificate-bound token's calls (core.calls.vouching_refusal), and the
binding of an app token asked for over mTLS (core.appauth).

A token bound only to a client certificate carries the thumbprint a resource server
reports: the broker never sees the certificate, so a count is taken only from an
authenticated resource server, never from whoever holds the token."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from tasklease.core.errors import Forbidden, Unauthorized
from tasklease.core.store import AuditQuery
from tasklease.core.tokens import KIND_APP
from tasklease.rules.binding import Presentation

GRANT = {
    "type": "resource_access",
    "actions": ["read"],
    "locations": ["https://rs.example/"],
    "limits": {"max_calls": 2},
}
CALL = {"action": "read", "location": "https://rs.example/x"}
THUMB = "A" * 43
OTHER = "B" * 43


def _launch(broker: Any, kit: Any, creator: Any) -> str:
    token, _ = broker.create_launch_token(
        creator,
        agent_name="counted",
        allowed_scope=None,
        max_ttl=None,
        single_use=False,
        ttl=600,
        ctx=kit.ctx,
        authorization_details=[GRANT],
    )
    return str(token)


def _bound_agent(broker: Any, kit: Any, creator: Any, task: str) -> Any:
    args, _ = kit.register_args(broker, _launch(broker, kit, creator), (), task_id=task)
    args["ctx"] = replace(kit.ctx, cert_thumbprint=THUMB)
    return broker.register(**args, authorization_details=[GRANT])


def _count(broker: Any, kit: Any, token: str, caller: Any = None) -> Any:
    return broker.count_call(
        token,
        kind="resource_access",
        call=CALL,
        audience=None,
        presented=Presentation(cert_thumbprint=THUMB),
        ctx=kit.ctx,
        caller=caller,
    )[1]


def _events(broker: Any, event_type: str) -> list[Any]:
    events: list[Any] = broker.store.query_audit(AuditQuery(event_type=event_type, limit=100))[0]
    return events


def _app(broker: Any, kit: Any) -> tuple[Any, str]:
    record, secret = broker.register_app(
        kit.admin(broker).claims,
        name="rs-app",
        scopes=None,
        token_ttl=None,
        ctx=kit.ctx,
        authorization_details=[GRANT],
    )
    return record, secret


def test_a_stolen_certificate_bound_token_cannot_spend_its_calls(broker: Any, kit: Any) -> None:
    agent = _bound_agent(broker, kit, kit.admin(broker).claims, "t-cert")
    assert agent.claims.raw["cnf"] == {"x5t#S256": THUMB}
    # Anyone holding the token can say its thumbprint: no count, one audited refusal.
    for _ in range(3):
        with pytest.raises(Unauthorized) as refused:
            _count(broker, kit, agent.token)
        assert refused.value.denial_id
    events = _events(broker, "grant_call_denied")
    assert len(events) == 3 and "without a resource server" in events[0].detail
    # The real agent's resource server, authenticated, still has both calls.
    admin = kit.admin(broker).claims
    assert [_count(broker, kit, agent.token, admin).remaining for _ in range(2)] == [1, 0]
    with pytest.raises(Forbidden):
        _count(broker, kit, agent.token, admin)
    counted = _events(broker, "grant_call_counted")
    assert counted and all("counter=operator:admin" in e.detail for e in counted)


def test_an_app_counts_only_its_own_agents_certificate_bound_calls(broker: Any, kit: Any) -> None:
    record, secret = _app(broker, kit)
    own = broker.app_auth(record.client_id, secret, kit.ctx).claims
    assert own.kind == KIND_APP
    agent = _bound_agent(broker, kit, own, "t-own")
    assert _count(broker, kit, agent.token, own).remaining == 1
    other = _bound_agent(broker, kit, kit.admin(broker).claims, "t-other")
    with pytest.raises(Forbidden) as refused:
        _count(broker, kit, other.token, own)
    assert refused.value.denial_id
    counted = _events(broker, "grant_call_counted")
    assert [f"counter=app:{record.client_id}" in e.detail for e in counted] == [True]


def test_bearer_and_dpop_bound_tokens_need_no_voucher(broker: Any, kit: Any) -> None:
    args, _ = kit.register_args(broker, _launch(broker, kit, kit.admin(broker).claims), ())
    bearer = broker.register(**args, authorization_details=[GRANT])
    assert "cnf" not in bearer.claims.raw
    counted = broker.count_call(
        bearer.token, kind="resource_access", call=CALL, audience=None, presented=None,
        ctx=kit.ctx,
    )[1]  # fmt: skip
    assert counted.remaining == 1
    # A token bound to the certificate presented with the wrong one is refused before.
    agent = _bound_agent(broker, kit, kit.admin(broker).claims, "t-wrong")
    with pytest.raises(Unauthorized):
        broker.count_call(
            agent.token, kind="resource_access", call=CALL, audience=None,
            presented=Presentation(cert_thumbprint=OTHER), ctx=kit.ctx,
            caller=kit.admin(broker).claims,
        )  # fmt: skip


def test_an_app_token_asked_for_over_mtls_is_bound_to_the_certificate(
    broker: Any, kit: Any
) -> None:
    record, secret = _app(broker, kit)
    mtls = replace(kit.ctx, cert_thumbprint=THUMB)
    bound = broker.app_auth(record.client_id, secret, mtls, bind=True)
    assert bound.claims.raw["cnf"] == {"x5t#S256": THUMB}
    # Its later calls over the same certificate authenticate; over another, or none, not.
    header = kit.bearer(bound.token)
    assert broker.authenticate(header, mtls).client_id == record.client_id
    for ctx in (kit.ctx, replace(kit.ctx, cert_thumbprint=OTHER)):
        with pytest.raises(Unauthorized):
            broker.authenticate(header, ctx)
    # POST /v1/app/auth (bind=False) stays unbound, and so does a sign-in without a
    # certificate.
    assert "cnf" not in broker.app_auth(record.client_id, secret, mtls).claims.raw
    assert "cnf" not in broker.app_auth(record.client_id, secret, kit.ctx, bind=True).claims.raw
