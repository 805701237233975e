# Would fail if: a route admitted a caller its operation in the route table does not
# (no token, a token of another kind, an operator's or app's token without the route's
# scope), or refused one without a denial_id naming exactly one audit event.
"""Every operation of the route table refuses every caller it does not admit.

For each operation in ``wire.OPERATIONS`` that requires a token, the caller classes its
``Auth`` excludes each call it over HTTP (in process, one broker) and are answered 401 or
403 with a ``denial_id`` that ends exactly one audit event: no token at all; an agent's,
an app's or an operator's token where that kind is not admitted; and, for an operation
gated by a scope, a token of the admitted kind holding every other scope of its kind but
that one. The table is what the document and docs/api.md say; this holds the routes to it.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, replace

import pytest
from starlette.testclient import TestClient
from tests.security.security_support import make_broker, register

from tasklease.core.broker import Broker
from tasklease.core.records import AuditQuery
from tasklease.core.tokens import APP_SCOPES, KIND_ADMIN, KIND_APP, ROLE_SCOPES, mint
from tasklease.http.app import create_app
from tasklease.http.wire import OPERATIONS, Operation

OPERATOR_SCOPES = ROLE_SCOPES["admin"]  # every scope an operator's token can hold


@dataclass(frozen=True)
class Caller:
    """One caller class: a token of ``kind`` holding ``scope`` (no token when kind is
    ""), and the status and error code a refusal of it answers."""

    name: str
    kind: str  # "", "agent", "admin" or "app"
    scope: tuple[str, ...] = ()
    status: int = 403
    code: str = "insufficient_scope"


NOBODY = Caller("no token", "", status=401, code="unauthorized")
AGENT = Caller("agent token", "agent")
OPERATOR = Caller("operator token", "admin", OPERATOR_SCOPES)
APP = Caller("app token", "app", APP_SCOPES)
# Introspection answers a caller without the privilege 401 (RFC 7662 section 2.3).
INTROSPECT = "POST /v1/introspect"
# Bodies for the operations that check their input before the caller's kind (core's
# ``require_agent``): valid enough to reach that check.
BODIES = {"POST /v1/delegate": {"delegate_to": "spiffe://probe/agent", "scope": ["read:data:x"]}}


def without(scope: str, held: tuple[str, ...]) -> tuple[str, ...]:
    assert scope in held, scope
    return tuple(s for s in held if s != scope)


def refused_callers(op: Operation) -> list[Caller]:
    """The callers ``op``'s ``Auth`` does not admit (none for a public operation)."""
    auth = op.auth
    if auth.kind == "":
        return []
    if auth.kind == "any":
        return [NOBODY]
    if auth.kind == "agent":
        return [replace(c, code=auth.refusal) for c in (OPERATOR, APP)] + [NOBODY]
    if auth.kind == "agent-or-app":
        return [NOBODY, OPERATOR]
    if auth.kind == "admin-or-app":
        # An app token, or an operator's with admin:revoke:*.
        feedless = Caller("operator token lacking admin:revoke:*", "admin")
        feedless = replace(feedless, scope=without("admin:revoke:*", OPERATOR_SCOPES))
        if op.route == INTROSPECT:
            return [NOBODY] + [
                replace(c, status=401, code="unauthorized") for c in (AGENT, feedless)
            ]
        return [NOBODY, AGENT, feedless]
    scope = auth.scope
    assert scope is not None, op.route
    if auth.kind == "admin":
        lacking = Caller(
            f"operator token lacking {scope}", "admin", without(scope, OPERATOR_SCOPES)
        )
        return [NOBODY, AGENT, APP, lacking]
    if auth.kind == "app":
        lacking = Caller(f"app token lacking {scope}", "app", without(scope, APP_SCOPES))
        return [NOBODY, AGENT, OPERATOR, lacking]
    raise AssertionError(f"{op.route}: unknown auth kind {auth.kind!r}")


CASES = [
    pytest.param(op, caller, id=f"{op.route} by {caller.name}")
    for op in OPERATIONS
    for caller in refused_callers(op)
]


class Env:
    def __init__(self) -> None:
        # metrics_public=token: /v1/metrics is served, to operators with admin:audit:*.
        self.broker: Broker = make_broker(metrics_public="token", refusal_burst=100_000)
        self.client = TestClient(create_app(self.broker, background=False))
        self.agent_token = register(self.broker).token

    def token(self, caller: Caller) -> str:
        if caller.kind == "agent":
            return self.agent_token
        cfg = self.broker.config
        token, _ = mint(
            self.broker.keyring,
            kind=KIND_ADMIN if caller.kind == "admin" else KIND_APP,
            iss=cfg.issuer,
            sub="operator:prober" if caller.kind == "admin" else "app:app-prober-abc123",
            aud=cfg.audience,
            iat=int(self.broker.clock.now()),
            ttl=300,
            scope=caller.scope,
            client_id="admin" if caller.kind == "admin" else "de-0123456789ab",
        )
        return token

    def denial_events(self, denial_id: str) -> int:
        events, _ = self.broker.store.query_audit(AuditQuery(outcome="denied", limit=100_000))
        return sum(1 for e in events if e.detail.endswith(f"denial={denial_id}"))


@pytest.fixture(scope="module")
def env() -> Iterator[Env]:
    made = Env()
    with made.client:
        yield made


def test_every_operation_that_takes_a_token_refuses_someone() -> None:
    gated = [op for op in OPERATIONS if op.auth.kind]
    assert len(gated) > 50
    covered = {case.values[0].route for case in CASES}  # type: ignore[union-attr]
    assert covered == {op.route for op in gated}


@pytest.mark.parametrize(("op", "caller"), CASES)
def test_operation_refuses_the_callers_it_does_not_admit(
    env: Env, op: Operation, caller: Caller
) -> None:
    path = re.sub(r"\{[^}/]+\}", "probe-x", op.path)
    headers = {"Authorization": f"Bearer {env.token(caller)}"} if caller.kind else {}
    body = BODIES.get(op.route, {}) if op.method in ("POST", "PUT", "PATCH") else None
    resp = env.client.request(op.method, path, headers=headers, json=body)
    assert resp.status_code == caller.status, (op.route, caller.name, resp.text)
    problem = resp.json()
    assert problem["error_code"] == caller.code, (op.route, caller.name, problem)
    denial_id = problem.get("denial_id")
    assert isinstance(denial_id, str) and denial_id.startswith("den_"), problem
    assert env.denial_events(denial_id) == 1, (op.route, caller.name, denial_id)
