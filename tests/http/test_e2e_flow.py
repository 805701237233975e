"""The whole AgentWrit v2 flow against a real broker process over loopback HTTP."""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import secrets
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import httpx
import jwt
import pytest
from e2e_support import (
    RunningBroker,
    assert_problem,
    b64url,
    is_hex,
    jwt_parts,
    metrics_url,
)

SPIFFE = re.compile(
    r"^spiffe://[a-z0-9._-]+/agent/([A-Za-z0-9._-]+)/([A-Za-z0-9._-]+)/([0-9a-f]{16})$"
)
RFC3339_SECONDS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")
APP_FIELDS = {
    "app_id",
    "name",
    "client_id",
    "scopes",
    "token_ttl",
    "status",
    "created_at",
    "updated_at",
}


def _uid() -> str:
    return secrets.token_hex(4)


# --- admin and apps ------------------------------------------------------------------


def test_admin_auth(broker: RunningBroker) -> None:
    resp = broker.post("/v1/admin/auth", json={"secret": broker.admin_secret})
    assert resp.status_code == 200
    assert resp.headers["content-type"] == "application/json"
    body = resp.json()
    assert set(body) == {"access_token", "expires_in", "token_type"}
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == 300
    _, claims = jwt_parts(body["access_token"])
    assert claims["sub"] == "admin"
    # RFC 9068 section 2.2.3.1: one space-delimited string in the token.
    assert claims["scope"] == "admin:launch-tokens:* admin:revoke:* admin:audit:*"

    assert_problem(
        broker.post("/v1/admin/auth", json={"secret": "wrong-secret-wrong"}),
        401,
        "unauthorized",
        detail="invalid credentials",
    )
    assert_problem(broker.post("/v1/admin/auth", json={"secret": ""}), 400, "invalid_request")
    legacy = assert_problem(
        broker.post("/v1/admin/auth", json={"client_id": "a", "client_secret": "b"}),
        400,
        "invalid_request",
    )
    assert "Admin auth format changed" in legacy["detail"]


def test_app_crud_and_auth(broker: RunningBroker) -> None:
    admin = broker.admin_headers()
    name = f"crud-{_uid()}"
    resp = broker.post(
        "/v1/admin/apps",
        json={"name": name, "scopes": ["read:data:*"], "token_ttl": 600},
        headers=admin,
    )
    assert resp.status_code == 201, resp.text
    assert resp.headers["content-type"] == "application/json"
    created = resp.json()
    assert set(created) == APP_FIELDS | {"client_secret"}
    assert is_hex(created["client_secret"], 64)
    assert created["app_id"].startswith(f"app-{name}-")
    assert created["scopes"] == ["read:data:*"]
    assert created["token_ttl"] == 600
    assert created["status"] == "active"
    assert RFC3339_SECONDS.match(created["created_at"])
    app_id = created["app_id"]

    listed = broker.get("/v1/admin/apps", headers=admin)
    assert listed.status_code == 200
    data = listed.json()
    assert set(data) == {"apps", "total"}
    assert data["total"] == len(data["apps"])
    mine = [a for a in data["apps"] if a["app_id"] == app_id]
    assert len(mine) == 1
    assert set(mine[0]) == APP_FIELDS  # the secret is shown once, never again
    assert "client_secret" not in listed.text

    one = broker.get(f"/v1/admin/apps/{app_id}", headers=admin)
    assert one.status_code == 200
    assert one.json() == mine[0]
    assert_problem(broker.get("/v1/admin/apps/app-nope-000000", headers=admin), 404, "not_found")

    # App auth with the one-time secret.
    auth = broker.post(
        "/v1/app/auth",
        json={"client_id": created["client_id"], "client_secret": created["client_secret"]},
    )
    assert auth.status_code == 200, auth.text
    ab = auth.json()
    assert set(ab) == {"access_token", "expires_in", "token_type", "scopes"}
    assert ab["token_type"] == "Bearer"
    assert ab["expires_in"] == 600
    assert ab["scopes"] == ["app:launch-tokens:*", "app:agents:*", "app:audit:read"]
    assert jwt_parts(ab["access_token"])[1]["sub"] == f"app:{app_id}"
    assert_problem(
        broker.post(
            "/v1/app/auth", json={"client_id": created["client_id"], "client_secret": "0" * 64}
        ),
        401,
        "unauthorized",
        detail="Authentication failed",
    )
    assert_problem(broker.post("/v1/app/auth", json={"client_id": "x"}), 400, "invalid_request")

    updated = broker.client.put(
        f"/v1/admin/apps/{app_id}",
        json={"scopes": ["read:data:*", "write:data:*"], "token_ttl": 900},
        headers=admin,
    )
    assert updated.status_code == 200, updated.text
    assert updated.json()["scopes"] == ["read:data:*", "write:data:*"]
    assert updated.json()["token_ttl"] == 900
    assert_problem(
        broker.client.put(f"/v1/admin/apps/{app_id}", json={}, headers=admin),
        400,
        "invalid_request",
    )
    assert_problem(
        broker.client.put(f"/v1/admin/apps/{app_id}", json={"token_ttl": 5}, headers=admin),
        400,
        "invalid_ttl",
    )

    deleted = broker.client.delete(f"/v1/admin/apps/{app_id}", headers=admin)
    assert deleted.status_code == 200, deleted.text
    gone = deleted.json()
    assert gone["status"] == "inactive"
    assert RFC3339_SECONDS.match(gone["deregistered_at"])
    assert broker.get(f"/v1/admin/apps/{app_id}", headers=admin).json()["status"] == "inactive"
    # A deregistered app can no longer authenticate, and its live tokens stop working.
    assert_problem(
        broker.post(
            "/v1/app/auth",
            json={"client_id": created["client_id"], "client_secret": created["client_secret"]},
        ),
        401,
        "unauthorized",
    )
    assert_problem(
        broker.post(
            "/v1/app/launch-tokens",
            json={"agent_name": "x", "allowed_scope": ["read:data:1"]},
            headers={"Authorization": f"Bearer {ab['access_token']}"},
        ),
        401,
        "unauthorized",
    )


def test_app_create_validation(broker: RunningBroker) -> None:
    admin = broker.admin_headers()
    cases = [
        ({"scopes": ["read:data:*"]}, "invalid_request"),
        ({"name": "ok-name", "scopes": []}, "invalid_request"),
        ({"name": "Bad_Name", "scopes": ["read:data:*"]}, "invalid_request"),
        ({"name": f"a{_uid()}", "scopes": ["read:data"]}, "invalid_request"),
        ({"name": f"a{_uid()}", "scopes": ["read:data:*"], "token_ttl": 59}, "invalid_ttl"),
        ({"name": f"a{_uid()}", "scopes": ["read:data:*"], "token_ttl": 0}, "invalid_ttl"),
    ]
    for body, code in cases:
        assert_problem(broker.post("/v1/admin/apps", json=body, headers=admin), 400, code)


def test_launch_tokens_admin_and_app_routes(broker: RunningBroker) -> None:
    admin_token = broker.admin_token()
    resp = broker.post(
        "/v1/admin/launch-tokens",
        json={"agent_name": "worker", "allowed_scope": ["read:data:*"], "max_ttl": 120},
        headers={"Authorization": f"Bearer {admin_token}"},
    )
    assert resp.status_code == 201, resp.text
    assert resp.headers["content-type"] == "application/json"
    body = resp.json()
    assert is_hex(body["launch_token"], 64)
    assert RFC3339_SECONDS.match(body["expires_at"])
    expires = datetime.strptime(body["expires_at"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    assert abs((expires - datetime.now(UTC)) - timedelta(seconds=30)) < timedelta(seconds=5)
    assert body["policy"]["allowed_scope"] == ["read:data:*"]
    assert body["policy"]["max_ttl"] == 120

    app = broker.create_app(["read:data:*", "write:logs:app"])
    app_token = broker.app_token(app)
    app_auth = {"Authorization": f"Bearer {app_token}"}
    ok = broker.post(
        "/v1/app/launch-tokens",
        json={"agent_name": "w", "allowed_scope": ["read:data:customers"], "ttl": 120},
        headers=app_auth,
    )
    assert ok.status_code == 201, ok.text
    assert is_hex(ok.json()["launch_token"], 64)
    assert ok.json()["policy"]["allowed_scope"] == ["read:data:customers"]

    # The app's ceiling holds on the app route.
    assert_problem(
        broker.post(
            "/v1/app/launch-tokens",
            json={"agent_name": "w", "allowed_scope": ["write:data:*"]},
            headers=app_auth,
        ),
        403,
        "forbidden",
    )
    # Neither kind of token can call the other's route.
    assert_problem(
        broker.post(
            "/v1/app/launch-tokens",
            json={"agent_name": "w", "allowed_scope": ["read:data:x"]},
            headers={"Authorization": f"Bearer {admin_token}"},
        ),
        403,
        "insufficient_scope",
    )
    assert_problem(
        broker.post(
            "/v1/admin/launch-tokens",
            json={"agent_name": "w", "allowed_scope": ["read:data:x"]},
            headers=app_auth,
        ),
        403,
        "insufficient_scope",
    )
    assert_problem(broker.get("/v1/admin/apps", headers=app_auth), 403, "insufficient_scope")
    # An app-minted launch token registers an agent within the ceiling.
    agent = broker.register(["read:data:customers"], launch_token=ok.json()["launch_token"])
    assert broker.is_valid(agent.access_token)

    # Launch-token input errors.
    for bad in (
        {"allowed_scope": ["read:data:*"]},
        {"agent_name": "w", "allowed_scope": []},
        {"agent_name": "w"},
    ):
        assert_problem(
            broker.post(
                "/v1/admin/launch-tokens",
                json=bad,
                headers={"Authorization": f"Bearer {admin_token}"},
            ),
            400,
            "invalid_request",
        )


def test_bearer_errors(broker: RunningBroker) -> None:
    assert_problem(
        broker.post("/v1/token/renew"), 401, "unauthorized", detail="missing authorization header"
    )
    assert_problem(
        broker.post("/v1/token/renew", headers={"Authorization": "Basic abc"}),
        401,
        "unauthorized",
        detail="invalid authorization scheme",
    )
    resp = broker.post("/v1/token/renew", headers={"Authorization": "Bearer not.a.token"})
    assert_problem(resp, 401, "unauthorized", detail="token verification failed")
    assert "www-authenticate" in resp.headers


# --- challenge, register, validate -----------------------------------------------------


def test_challenge_register_validate(broker: RunningBroker) -> None:
    resp = broker.get("/v1/challenge")
    assert resp.status_code == 200
    assert resp.headers["content-type"] == "application/json"
    challenge = resp.json()
    assert is_hex(challenge["nonce"], 64)
    assert challenge["expires_in"] == 30
    assert broker.nonce() != challenge["nonce"]

    scope = ["read:data:customers", "write:logs:e2e"]
    lt = broker.launch_token(["read:data:*", "write:logs:e2e"], max_ttl=120)
    body, _ = broker.register_body(lt, scope, nonce=challenge["nonce"], orch_id="orch-1")
    reg = broker.post("/v1/register", json=body)
    assert reg.status_code == 200, reg.text
    assert reg.headers["content-type"] == "application/json"
    data = reg.json()
    assert {"agent_id", "access_token", "expires_in"} <= set(data)
    match = SPIFFE.match(data["agent_id"])
    assert match, data["agent_id"]
    assert match.group(1) == "orch-1"
    assert match.group(2) == body["task_id"]
    assert data["expires_in"] == 120

    header, claims = jwt_parts(data["access_token"])
    assert header["alg"] == "EdDSA"
    assert header["kid"]
    assert claims["sub"] == data["agent_id"]
    assert claims["scope"] == " ".join(scope)
    assert claims["exp"] - claims["iat"] == 120

    result = broker.validate(data["access_token"])
    assert result["valid"] is True
    c = result["claims"]
    for name in ("iss", "sub", "aud", "exp", "nbf", "iat", "jti", "scope", "task_id", "orch_id"):
        assert name in c, name
    assert c["sub"] == data["agent_id"]
    assert c["task_id"] == body["task_id"]
    assert c["orch_id"] == "orch-1"
    assert c["nbf"] == c["iat"]
    assert is_hex(c["jti"], 32)
    assert isinstance(c["aud"], list)

    assert_problem(broker.post("/v1/token/validate", json={}), 400, "invalid_request")
    assert_problem(broker.post("/v1/token/validate", json={"token": ""}), 400, "invalid_request")


def _forge(header: dict[str, object], claims: dict[str, object], signature: bytes) -> str:
    h = b64url(json.dumps(header, separators=(",", ":")).encode())
    p = b64url(json.dumps(claims, separators=(",", ":")).encode())
    return f"{h}.{p}.{b64url(signature)}"


def test_validate_rejects_bad_tokens(broker: RunningBroker) -> None:
    agent = broker.register(["read:data:x"])
    header, claims = jwt_parts(agent.access_token)
    h_seg, p_seg, s_seg = agent.access_token.split(".")
    kid, signing_key = broker.signing_key()
    assert header["kid"] == kid
    now = int(time.time())

    def signed(hdr: dict[str, object], cl: dict[str, object]) -> str:
        h = b64url(json.dumps(hdr, separators=(",", ":")).encode())
        p = b64url(json.dumps(cl, separators=(",", ":")).encode())
        sig = signing_key.sign(f"{h}.{p}".encode())
        return f"{h}.{p}.{b64url(sig)}"

    # Control: a token we sign ourselves with the broker key is accepted, so the
    # rejections below are about the one property each case breaks.
    fresh = {**claims, "jti": secrets.token_hex(16), "iat": now, "nbf": now, "exp": now + 60}
    assert broker.is_valid(signed(header, fresh))

    expired = {
        **claims,
        "jti": secrets.token_hex(16),
        "iat": now - 900,
        "nbf": now - 900,
        "exp": now - 300,
        "oiat": now - 900,
    }
    tampered_claims = {**claims, "scope": ["admin:revoke:*"]}
    tampered = f"{h_seg}.{b64url(json.dumps(tampered_claims).encode())}.{s_seg}"
    public = signing_key.public_key().public_bytes_raw()
    none_header = {"alg": "none", "typ": header["typ"], "kid": kid}
    hs_header = {"alg": "HS256", "typ": header["typ"], "kid": kid}
    hs_input = (
        b64url(json.dumps(hs_header, separators=(",", ":")).encode())
        + "."
        + b64url(json.dumps(claims, separators=(",", ":")).encode())
    )
    hs_raw = hs_input + "." + b64url(hmac.new(public, hs_input.encode(), hashlib.sha256).digest())
    x = b64url(public).encode()
    hs_x = hs_input + "." + b64url(hmac.new(x, hs_input.encode(), hashlib.sha256).digest())
    flipped = s_seg[:-2] + ("A" if s_seg[-2] != "A" else "B") + s_seg[-1]
    bad_tokens = {
        "garbage": "garbage",
        "three garbage segments": "a.b.c",
        "expired (signature-valid)": signed(header, expired),
        "tampered payload": tampered,
        "flipped signature": f"{h_seg}.{p_seg}.{flipped}",
        "alg none, empty signature": _forge(none_header, claims, b""),
        "alg none, real signature": f"{_forge(none_header, claims, b'').rstrip('.')}.{s_seg}",
        "alg HS256 keyed with the raw public key": hs_raw,
        "alg HS256 keyed with the JWK x": hs_x,
        "unknown kid": signed({**header, "kid": "nope"}, claims),
        "admin kind presented as agent": broker.admin_token(),
    }
    for name, token in bad_tokens.items():
        assert not broker.is_valid(token), name
        if name != "admin kind presented as agent":
            assert_problem(
                broker.post("/v1/token/renew", headers={"Authorization": f"Bearer {token}"}),
                401,
                "unauthorized",
                detail="token verification failed",
            )
    # The genuine token is still fine after all that.
    assert broker.is_valid(agent.access_token)


def test_renew_and_release(broker: RunningBroker) -> None:
    agent = broker.register(["read:data:x"], max_ttl=90)
    resp = broker.post("/v1/token/renew", headers=agent.bearer)
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert set(body) == {"access_token", "expires_in", "token_type"}
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == 90
    new = body["access_token"]
    assert new != agent.access_token
    old_claims = jwt_parts(agent.access_token)[1]
    new_claims = jwt_parts(new)[1]
    for name in ("sub", "scope", "task_id", "orch_id"):
        assert new_claims[name] == old_claims[name]
    assert new_claims["jti"] != old_claims["jti"]
    # The predecessor is dead at once; renewing it again fails.
    assert not broker.is_valid(agent.access_token)
    assert broker.is_valid(new)
    assert_problem(broker.post("/v1/token/renew", headers=agent.bearer), 401, "unauthorized")

    rel = broker.post("/v1/token/release", headers={"Authorization": f"Bearer {new}"})
    assert rel.status_code == 204
    assert rel.content == b""
    assert not broker.is_valid(new)
    assert_problem(
        broker.post("/v1/token/release", headers={"Authorization": f"Bearer {new}"}),
        401,
        "unauthorized",
        detail="token verification failed",
    )


# --- delegation ----------------------------------------------------------------------


def test_delegation(broker: RunningBroker) -> None:
    a = broker.register(["read:data:*", "write:data:x"])
    b = broker.register(["read:data:y"])
    resp = broker.delegate(a.access_token, b.agent_id, ["read:data:42"], ttl=30)
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert set(body) == {"access_token", "expires_in", "token_type", "delegation_chain"}
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == 30
    chain = body["delegation_chain"]
    assert len(chain) == 1
    assert set(chain[0]) == {"agent", "scope", "delegated_at", "signature"}
    assert chain[0]["agent"] == a.agent_id
    assert chain[0]["scope"] == ["read:data:*", "write:data:x"]
    assert is_hex(chain[0]["signature"], 128)

    result = broker.validate(body["access_token"])
    assert result["valid"] is True
    claims = result["claims"]
    assert claims["sub"] == b.agent_id
    assert claims["scope"] == ["read:data:42"]
    assert claims["task_id"] == a.task_id  # the delegator's task, not the delegate's
    assert claims["delegation_chain"] == chain
    assert is_hex(claims["chain_hash"], 64)

    # Equal scope is allowed; widening is not.
    assert broker.delegate(a.access_token, b.agent_id, ["read:data:*"]).status_code == 200
    assert_problem(
        broker.delegate(a.access_token, b.agent_id, ["write:data:*"]),
        403,
        "scope_violation",
        detail="delegated scope exceeds delegator scope",
    )
    assert_problem(
        broker.delegate(body["access_token"], a.agent_id, ["read:data:43"]),
        403,
        "scope_violation",
    )
    # Unknown delegate, missing fields, and non-agent bearers.
    assert_problem(
        broker.delegate(
            a.access_token, "spiffe://tasklease.local/agent/o/t/0000000000000000", ["read:data:1"]
        ),
        404,
        "not_found",
    )
    assert_problem(broker.delegate(a.access_token, "", ["read:data:1"]), 400, "invalid_request")
    assert_problem(broker.delegate(a.access_token, b.agent_id, []), 400, "invalid_request")
    assert_problem(
        broker.delegate(broker.admin_token(), b.agent_id, ["admin:revoke:*"]), 403, "forbidden"
    )


def test_delegation_depth_limit(broker: RunningBroker) -> None:
    # Seven distinct agents: a chain may not pass through one agent twice (no cycles).
    agents = [broker.register(["read:data:*"]) for _ in range(7)]
    token = agents[0].access_token
    for depth in range(1, 6):
        target = agents[depth]
        resp = broker.delegate(token, target.agent_id, ["read:data:*"], ttl=60)
        assert resp.status_code == 200, (depth, resp.text)
        assert len(resp.json()["delegation_chain"]) == depth
        token = resp.json()["access_token"]
        assert broker.is_valid(token)
    assert_problem(
        broker.delegate(token, agents[6].agent_id, ["read:data:*"]),
        403,
        "scope_violation",
        detail="delegation depth limit exceeded",
    )


# --- revocation ------------------------------------------------------------------------


def test_revoke_token_level(broker: RunningBroker) -> None:
    a = broker.register(["read:data:x"])
    resp = broker.revoke("token", jwt_parts(a.access_token)[1]["jti"])
    assert resp.status_code == 200, resp.text
    assert resp.json() == {
        "revoked": True,
        "level": "token",
        "target": jwt_parts(a.access_token)[1]["jti"],
        "count": 1,
    }
    assert not broker.is_valid(a.access_token)
    assert_problem(broker.post("/v1/token/renew", headers=a.bearer), 401, "unauthorized")
    # Idempotent.
    assert broker.revoke("token", jwt_parts(a.access_token)[1]["jti"]).status_code == 200


def test_revoke_agent_level(broker: RunningBroker) -> None:
    a = broker.register(["read:data:*"])
    b = broker.register(["read:data:y"])
    other = broker.register(["read:data:*"])
    delegated = broker.delegate(a.access_token, b.agent_id, ["read:data:1"]).json()["access_token"]
    renewed = broker.post("/v1/token/renew", headers=a.bearer).json()["access_token"]
    assert broker.revoke("agent", a.agent_id).status_code == 200
    assert not broker.is_valid(renewed)
    assert not broker.is_valid(delegated)  # descendants die with the agent
    assert broker.is_valid(b.access_token)
    assert broker.is_valid(other.access_token)
    # A revoked agent cannot receive delegations either.
    assert_problem(
        broker.delegate(other.access_token, a.agent_id, ["read:data:1"]), 404, "not_found"
    )


def test_revoke_task_level(broker: RunningBroker) -> None:
    task = f"task-{_uid()}"
    a1 = broker.register(["read:data:x"], task_id=task)
    a2 = broker.register(["read:data:x"], task_id=task)
    bystander = broker.register(["read:data:x"])
    assert broker.revoke("task", task).status_code == 200
    assert not broker.is_valid(a1.access_token)
    assert not broker.is_valid(a2.access_token)
    assert broker.is_valid(bystander.access_token)


def test_revoke_chain_level(broker: RunningBroker) -> None:
    root = broker.register(["read:data:*"])
    mid = broker.register(["read:data:y"])
    leaf = broker.register(["read:data:y"])
    d1 = broker.delegate(root.access_token, mid.agent_id, ["read:data:*"]).json()["access_token"]
    d2 = broker.delegate(d1, leaf.agent_id, ["read:data:1"]).json()["access_token"]
    assert broker.revoke("chain", root.agent_id).status_code == 200
    assert not broker.is_valid(d1)
    assert not broker.is_valid(d2)
    assert broker.is_valid(root.access_token)  # the root's own token lives on
    assert broker.is_valid(mid.access_token)


def test_revoke_errors_and_authorization(broker: RunningBroker) -> None:
    admin = broker.admin_headers()
    assert_problem(
        broker.post("/v1/revoke", json={"level": "token"}, headers=admin), 400, "invalid_request"
    )
    assert_problem(
        broker.post("/v1/revoke", json={"level": "galaxy", "target": "x"}, headers=admin),
        400,
        "invalid_request",
    )
    agent = broker.register(["read:data:x"])
    assert_problem(
        broker.post("/v1/revoke", json={"level": "token", "target": "x"}, headers=agent.bearer),
        403,
        "insufficient_scope",
    )
    assert_problem(broker.get("/v1/audit/events", headers=agent.bearer), 403, "insufficient_scope")


# --- audit, health, metrics, JWKS -------------------------------------------------------


EVENT_FIELDS = {
    "id",
    "timestamp",
    "event_type",
    "agent_id",
    "task_id",
    "orch_id",
    "detail",
    "resource",
    "outcome",
    "deleg_depth",
    "deleg_chain_hash",
    "hash",
    "prev_hash",
}


def test_audit_events_filters(broker: RunningBroker) -> None:
    admin = broker.admin_headers()
    task = f"task-{_uid()}"
    agent = broker.register(["read:data:x"], task_id=task)
    # A denied event tied to the same task: scope above the launch ceiling.
    lt = broker.launch_token(["read:data:x"])
    body, _ = broker.register_body(lt, ["write:data:x"], task_id=task)
    assert_problem(broker.post("/v1/register", json=body), 403, "scope_violation")

    def events(**params: object) -> dict[str, object]:
        resp = broker.get("/v1/audit/events", params=params, headers=admin)
        assert resp.status_code == 200, resp.text
        assert resp.headers["content-type"] == "application/json"
        data = resp.json()
        assert {"events", "total", "offset", "limit"} <= set(data)
        return data

    everything = events()
    assert everything["total"] >= 3
    assert everything["offset"] == 0
    first = everything["events"][0]
    assert set(first) >= EVENT_FIELDS
    assert re.fullmatch(r"evt-\d{6}", first["id"])

    by_agent = events(agent_id=agent.agent_id)
    types = [e["event_type"] for e in by_agent["events"]]
    assert "agent_registered" in types
    assert "token_issued" in types
    assert all(e["agent_id"] == agent.agent_id for e in by_agent["events"])

    one = events(event_type="agent_registered", agent_id=agent.agent_id)
    assert one["total"] == 1
    assert one["events"][0]["task_id"] == task
    assert one["events"][0]["outcome"] == "success"

    by_task = events(task_id=task)
    assert by_task["total"] >= 3
    denied = events(task_id=task, outcome="denied")
    assert denied["total"] >= 1
    assert all(e["outcome"] == "denied" for e in denied["events"])
    assert "registration_policy_violation" in [e["event_type"] for e in denied["events"]]
    assert events(task_id=task, outcome="success")["total"] == by_task["total"] - denied["total"]

    # Time window: an event's own timestamp works as both bounds (inclusive).
    stamp = one["events"][0]["timestamp"]
    around = events(task_id=task, since=stamp, until=stamp)
    assert one["events"][0]["id"] in [e["id"] for e in around["events"]]
    assert events(task_id=task, since="2999-01-01T00:00:00Z")["total"] == 0
    assert events(task_id=task, until="2000-01-01T00:00:00Z")["total"] == 0
    assert_problem(
        broker.get("/v1/audit/events", params={"since": "yesterday"}, headers=admin),
        400,
        "invalid_request",
    )

    # Pagination: total is the full match count; the page is a window of it.
    page = events(task_id=task, limit=1, offset=1)
    assert page["total"] == by_task["total"]
    assert page["limit"] == 1
    assert page["offset"] == 1
    assert [e["id"] for e in page["events"]] == [by_task["events"][1]["id"]]
    assert events(task_id=task, offset=10_000)["events"] == []
    assert_problem(
        broker.get("/v1/audit/events", params={"limit": "ten"}, headers=admin),
        400,
        "invalid_request",
    )
    # Secrets never reach the log.
    assert broker.admin_secret not in json.dumps(everything)


def test_health(broker: RunningBroker) -> None:
    resp = broker.get("/v1/health")
    assert resp.status_code == 200
    assert resp.headers["content-type"] == "application/json"
    body = resp.json()
    # AgentWrit's shape for anyone; the version and counts are an operator's to read.
    assert {"status", "version", "uptime", "db_connected", "audit_events_count"} <= set(body)
    assert body["status"] == "ok"
    assert body["version"] == "" and body["uptime"] == 0 and body["audit_events_count"] == 0
    assert body["db_connected"] is True
    body = broker.get("/v1/health", headers=broker.admin_headers()).json()
    assert isinstance(body["version"], str) and body["version"]
    assert isinstance(body["uptime"], int) and body["uptime"] >= 0
    assert isinstance(body["audit_events_count"], int)
    assert body["audit_events_count"] >= 0


def test_metrics(broker: RunningBroker) -> None:
    broker.register(["read:data:x"])
    assert_problem(broker.get("/v1/metrics"), 404, "not_found")  # not on the public port
    resp = httpx.get(metrics_url(broker), timeout=10)
    assert resp.status_code == 200
    assert resp.headers["content-type"].startswith("text/plain")
    text = resp.text
    assert "# TYPE tasklease_issuance_seconds histogram" in text
    assert 'tasklease_issuance_seconds_bucket{kind="register"' in text
    assert "tasklease_registrations_total" in text


def test_jwks_offline_verification(broker: RunningBroker) -> None:
    resp = broker.get("/.well-known/jwks.json")
    assert resp.status_code == 200
    assert resp.headers["content-type"] == "application/json"
    keys = resp.json()["keys"]
    assert keys
    for key in keys:
        assert key["kty"] == "OKP"
        assert key["crv"] == "Ed25519"
        assert "d" not in key
    agent = broker.register(["read:data:x"])
    kid = jwt.get_unverified_header(agent.access_token)["kid"]
    jwk = next(k for k in keys if k["kid"] == kid)
    public = jwt.PyJWK(jwk, algorithm="EdDSA")
    claims = jwt.decode(
        agent.access_token,
        public.key,
        algorithms=["EdDSA"],
        audience="tasklease",
        issuer="tasklease",
    )
    assert claims["sub"] == agent.agent_id
    with pytest.raises(jwt.InvalidSignatureError):
        h, p, s = agent.access_token.split(".")
        other = jwt_parts(agent.access_token)[1] | {"scope": ["admin:revoke:*"]}
        jwt.decode(
            f"{h}.{b64url(json.dumps(other).encode())}.{s}",
            public.key,
            algorithms=["EdDSA"],
            audience="tasklease",
        )


def test_audit_offset_out_of_range_is_a_client_error(broker: RunningBroker) -> None:
    """A huge ``offset`` is a 400, not a 500 (SQLite cannot bind ints above 2**63-1)."""
    for offset in (str(2**63), str(10**30)):
        resp = broker.get(
            "/v1/audit/events", params={"offset": offset}, headers=broker.admin_headers()
        )
        assert resp.status_code != 500, resp.text
        assert_problem(resp, 400, "invalid_request")


def test_app_conflicts_and_unknown_ids(broker: RunningBroker) -> None:
    admin = broker.admin_headers()
    name = f"dup-{_uid()}"
    broker.create_app(["read:data:*"], name=name)
    assert_problem(
        broker.post(
            "/v1/admin/apps", json={"name": name, "scopes": ["read:data:*"]}, headers=admin
        ),
        409,
        "conflict",
    )
    assert_problem(
        broker.client.put("/v1/admin/apps/app-nope-1", json={"token_ttl": 600}, headers=admin),
        404,
        "not_found",
    )
    assert_problem(
        broker.client.delete("/v1/admin/apps/app-nope-1", headers=admin), 404, "not_found"
    )


def test_delegated_lifetime_is_bounded_by_the_delegator(broker: RunningBroker) -> None:
    a = broker.register(["read:data:*"], max_ttl=100)
    b = broker.register(["read:data:y"])
    resp = broker.delegate(a.access_token, b.agent_id, ["read:data:1"], ttl=3000)
    assert resp.status_code == 200, resp.text
    delegated = jwt_parts(resp.json()["access_token"])[1]
    assert delegated["exp"] <= jwt_parts(a.access_token)[1]["exp"]
    assert resp.json()["expires_in"] <= 100


def test_renewal_limit(start_broker: Callable[..., RunningBroker]) -> None:
    limited = start_broker(env={"TASKLEASE_MAX_RENEWALS": "2"})
    agent = limited.register(["read:data:x"])
    token = agent.access_token
    for _ in range(2):
        resp = limited.post("/v1/token/renew", headers={"Authorization": f"Bearer {token}"})
        assert resp.status_code == 200, resp.text
        token = resp.json()["access_token"]
    assert_problem(
        limited.post("/v1/token/renew", headers={"Authorization": f"Bearer {token}"}),
        403,
        "renewal_count_exceeded",
    )
    assert limited.is_valid(token)  # refusing a renewal does not revoke the token
