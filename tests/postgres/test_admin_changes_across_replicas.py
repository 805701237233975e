"""An operator's change made through one PostgreSQL replica is enforced by another within
its documented bound, whatever the other replica had already seen (validated, cached,
signed) before the change.

The tests share one pair of replicas (``replica_pair``), each with apps, operators,
tenants and domains of its own; the two that change what every test relies on (the
signing key, the policy set) start a pair of their own."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from e2e_support import RunningBroker

from tasklease.http.console._session import SESSION_COOKIE

pytestmark = pytest.mark.slow

Replicas = Callable[..., list[RunningBroker]]
Pair = tuple[RunningBroker, RunningBroker]  # shared by the tests of this module
BOUND = 3.0  # revocations: milliseconds (NOTIFY); registry rows: RECHECK (1 s)


def _within(condition: Callable[[], bool], bound: float = BOUND) -> None:
    deadline = time.monotonic() + bound
    while not condition():
        assert time.monotonic() < deadline, "not enforced within the bound"
        time.sleep(0.02)


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _app_launch(replica: RunningBroker, token: str, scope: list[str]) -> Any:
    return replica.post(
        "/v1/app/launch-tokens",
        json={"agent_name": "x", "allowed_scope": scope},
        headers=_bearer(token),
    )


def _register(replica: RunningBroker, launch: str, scope: list[str]) -> int:
    body, _ = replica.register_body(launch, scope)
    return replica.post("/v1/register", json=body).status_code


def test_a_rotated_app_secret_ends_on_the_other_replica(replica_pair: Pair) -> None:
    a, b = replica_pair
    app = a.create_app(["read:data:*"])
    token = b.app_token(app)
    made = _app_launch(b, token, ["read:data:1"])  # B has seen and used the app token
    assert made.status_code == 201, made.text
    launch = made.json()["launch_token"]
    rotated = a.post(f"/v1/admin/apps/{app['app_id']}/rotate-secret", headers=a.admin_headers())
    assert rotated.status_code == 200, rotated.text
    old = b.post(
        "/v1/app/auth", json={"client_id": app["client_id"], "client_secret": app["client_secret"]}
    )
    assert old.status_code == 401, old.text
    _within(lambda: _app_launch(b, token, ["read:data:1"]).status_code == 401)
    assert _register(b, launch, ["read:data:1"]) == 401


def test_a_removed_app_ends_on_the_other_replica(replica_pair: Pair) -> None:
    a, b = replica_pair
    app = a.create_app(["read:data:*"])
    token = b.app_token(app)
    launch = _app_launch(b, token, ["read:data:1"]).json()["launch_token"]
    spare = _app_launch(b, token, ["read:data:1"]).json()["launch_token"]
    agent = b.register(["read:data:1"], launch_token=launch)
    assert b.is_valid(agent.access_token)
    gone = a.client.delete(f"/v1/admin/apps/{app['app_id']}", headers=a.admin_headers())
    assert gone.status_code == 200, gone.text
    _within(lambda: not b.is_valid(agent.access_token))
    assert _app_launch(b, token, ["read:data:1"]).status_code == 401
    assert _register(b, spare, ["read:data:1"]) == 401
    old = b.post(
        "/v1/app/auth", json={"client_id": app["client_id"], "client_secret": app["client_secret"]}
    )
    assert old.status_code == 401, old.text


def test_a_narrowed_app_issues_nothing_wider_on_the_other_replica(replica_pair: Pair) -> None:
    a, b = replica_pair
    app = a.create_app(["read:data:*", "write:data:*"])
    token = b.app_token(app)
    wide = _app_launch(b, token, ["write:data:1"])
    assert wide.status_code == 201, wide.text
    narrowed = a.client.put(
        f"/v1/admin/apps/{app['app_id']}",
        json={"scopes": ["read:data:*"]},
        headers=a.admin_headers(),
    )
    assert narrowed.status_code == 200, narrowed.text
    assert _app_launch(b, token, ["write:data:1"]).status_code == 403
    assert _register(b, wide.json()["launch_token"], ["write:data:1"]) in (401, 403)
    assert _app_launch(b, token, ["read:data:1"]).status_code == 201


def _operator(replica: RunningBroker, role: str) -> tuple[str, str]:
    import secrets

    name = f"{role}-{secrets.token_hex(3)}"
    made = replica.post(
        "/v1/admin/operators", json={"name": name, "role": role}, headers=replica.admin_headers()
    )
    assert made.status_code == 201, made.text
    return name, made.json()["secret"]


def _sign_in(replica: RunningBroker, name: str, secret: str) -> Any:
    return replica.post("/v1/operator/auth", json={"name": name, "secret": secret})


def test_a_removed_operator_ends_on_the_other_replica(replica_pair: Pair) -> None:
    a, b = replica_pair
    name, secret = _operator(a, "admin")
    signed = _sign_in(b, name, secret)
    assert signed.status_code == 200, signed.text
    token = signed.json()["access_token"]
    assert b.get("/v1/admin/agents", headers=_bearer(token)).status_code == 200
    with httpx.Client(base_url=b.url, cookies={SESSION_COOKIE: token}) as browser:
        assert browser.get("/console/agents").status_code == 200
    gone = a.client.delete(f"/v1/admin/operators/{name}", headers=a.admin_headers())
    assert gone.status_code == 200, gone.text
    _within(lambda: b.get("/v1/admin/agents", headers=_bearer(token)).status_code == 401)
    assert _sign_in(b, name, secret).status_code == 401
    # The console's session is the same token.
    with httpx.Client(base_url=b.url, cookies={SESSION_COOKIE: token}) as browser:
        console = browser.get("/console/agents")
    assert console.status_code == 303, console.text


def test_a_rotated_operator_ends_on_the_other_replica(replica_pair: Pair) -> None:
    a, b = replica_pair
    name, secret = _operator(a, "operator")
    token = _sign_in(b, name, secret).json()["access_token"]
    assert b.get("/v1/admin/agents", headers=_bearer(token)).status_code == 200
    rotated = a.post(f"/v1/admin/operators/{name}/rotate", json={}, headers=a.admin_headers())
    assert rotated.status_code == 200, rotated.text
    assert _sign_in(b, name, secret).status_code == 401
    _within(lambda: b.get("/v1/admin/agents", headers=_bearer(token)).status_code == 401)


def test_a_removed_tenant_ends_on_the_other_replica(replica_pair: Pair) -> None:
    a, b = replica_pair
    view_a = a.create_tenant("acme")
    secret = view_a.admin_secret
    view_b = b.tenant("acme", secret)
    agent = view_b.register(["read:data:1"])
    assert view_b.is_valid(agent.access_token)
    operator = view_b.admin_token()
    gone = a.client.delete("/v1/admin/tenants/acme", headers=a.admin_headers())
    assert gone.status_code == 200, gone.text

    def ended() -> bool:
        answer = view_b.post("/v1/token/validate", json={"token": agent.access_token})
        return answer.status_code == 404

    _within(ended)
    assert view_b.get("/v1/admin/agents", headers=_bearer(operator)).status_code == 404
    assert b.post("/v1/token/validate", json={"token": agent.access_token}).json()["valid"] is False


def test_a_forbid_loaded_on_one_replica_holds_on_the_other(
    pg_url: str, replicas: Replicas, tmp_path: Any
) -> None:
    from tasklease.core.policy import default_policies

    policies = tmp_path / "policies"
    (policies / "default").mkdir(parents=True)
    [(name, text)] = default_policies().files
    (policies / "default" / name).write_text(text)
    a, b = replicas(pg_url, env={"TASKLEASE_POLICY_DIR": str(policies)})
    # B has decided (and remembered) registrations under the set in force.
    for _ in range(2):
        b.register(["read:data:1"])
    launch = b.launch_token(["read:data:1"])
    (policies / "default" / "forbid.cedar").write_text(
        '@id("no-register")\nforbid (principal, action == Action::"register", resource);\n'
    )
    reloaded = a.post("/v1/admin/policy/reload", headers=a.admin_headers())
    assert reloaded.status_code == 200, reloaded.text
    _within(lambda: _register(b, b.launch_token(["read:data:1"]), ["read:data:1"]) == 403)
    assert _register(b, launch, ["read:data:1"]) == 403


def test_one_operator_name_added_on_two_replicas_at_once(replica_pair: Pair) -> None:
    import secrets
    import threading
    from concurrent.futures import ThreadPoolExecutor

    a, b = replica_pair
    heads = (a.admin_headers(), b.admin_headers())
    for _ in range(6):
        name = f"race-{secrets.token_hex(3)}"
        barrier = threading.Barrier(2)

        def add(i: int, name: str = name, barrier: threading.Barrier = barrier) -> Any:
            replica = (a, b)[i]
            barrier.wait()
            return replica.post(
                "/v1/admin/operators", json={"name": name, "role": "auditor"}, headers=heads[i]
            )

        with ThreadPoolExecutor(2) as pool:
            answers = list(pool.map(add, range(2)))
        statuses = sorted(r.status_code for r in answers)
        assert statuses == [201, 409], [r.text for r in answers]
        refused = next(r for r in answers if r.status_code == 409)
        assert refused.json().get("denial_id"), refused.text


def test_a_key_rotated_and_retired_on_one_replica_ends_the_others_cached_tokens(
    pg_url: str, replicas: Replicas
) -> None:
    from e2e_support import jwt_parts

    a, b = replicas(pg_url)
    agent = b.register(["read:data:1"])
    old_kid = jwt_parts(agent.access_token)[0]["kid"]
    for _ in range(3):  # remembered by B's token cache
        assert b.is_valid(agent.access_token)
    rotated = a.post("/v1/admin/keys/rotate", headers=a.admin_headers())
    assert rotated.status_code == 200, rotated.text
    new_kid = rotated.json()["kid"]
    a._admin_token = None  # signed by the key about to go
    retired = a.post(f"/v1/admin/keys/{old_kid}/retire", headers=a.admin_headers())
    assert retired.status_code == 200, retired.text
    _within(lambda: not b.is_valid(agent.access_token))
    # B signs with the new key only, and its JWKS no longer lists the old one.
    b._admin_token = None  # its admin token was signed by the retired key
    fresh = b.register(["read:data:1"])
    assert jwt_parts(fresh.access_token)[0]["kid"] == new_kid
    assert {k["kid"] for k in b.get("/.well-known/jwks.json").json()["keys"]} == {new_kid}


def test_one_tenant_removed_on_two_replicas_at_once(replica_pair: Pair) -> None:
    import threading
    from concurrent.futures import ThreadPoolExecutor

    a, b = replica_pair
    heads = (a.admin_headers(), b.admin_headers())
    for round_ in range(4):
        name = f"gone{round_}"
        a.create_tenant(name)
        barrier = threading.Barrier(2)

        def remove(i: int, name: str = name, barrier: threading.Barrier = barrier) -> Any:
            barrier.wait()
            return (a, b)[i].client.delete(f"/v1/admin/tenants/{name}", headers=heads[i])

        with ThreadPoolExecutor(2) as pool:
            answers = list(pool.map(remove, range(2)))
        assert sorted(r.status_code for r in answers) == [200, 404], [r.text for r in answers]
        refused = next(r for r in answers if r.status_code == 404)
        assert refused.json().get("denial_id"), refused.text


def test_a_domain_declared_and_removed_on_two_replicas_at_once(replica_pair: Pair) -> None:
    """A declaration racing the domain's removal never leaves the domain declared while
    its removal stands: either the declaration came first (the removal then ends it) or
    it is refused 409 with its ``denial_id``."""
    import threading
    from concurrent.futures import ThreadPoolExecutor

    a, b = replica_pair
    heads = (a.admin_headers(), b.admin_headers())
    static = '{"keys":[]}'
    for round_ in range(12):
        domain = f"race{round_}.example"
        made = a.post(
            "/v1/admin/federations",
            json={"trust_domain": domain, "bundle": static},
            headers=heads[0],
        )
        assert made.status_code == 201, made.text
        barrier = threading.Barrier(2)

        def change(i: int, domain: str = domain, barrier: threading.Barrier = barrier) -> Any:
            barrier.wait()
            if i == 0:
                return a.post(
                    "/v1/admin/federations",
                    json={"trust_domain": domain, "bundle": static},
                    headers=heads[0],
                )
            return b.client.delete(f"/v1/admin/federations/{domain}", headers=heads[1])

        with ThreadPoolExecutor(2) as pool:
            added, removed = pool.map(change, range(2))
        assert removed.status_code == 200, removed.text
        assert added.status_code in (201, 409), added.text
        if added.status_code == 409:
            assert added.json().get("denial_id"), added.text
        # Whichever won, the removal stands and the domain is not declared.
        for replica, head in zip((a, b), heads, strict=True):
            shown = replica.get(f"/v1/admin/federations/{domain}", headers=head)
            assert shown.status_code == 404, (added.status_code, shown.text)
