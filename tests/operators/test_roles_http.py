"""Named operators against a real ``tasklease serve`` over loopback HTTP.

Each role signs in with its own credential and is allowed and refused exactly what it
says; every refusal is a 403 whose ``denial_id`` leads to one audit event naming the
operator; every action is audited under the operator's name; removing or re-keying an
operator ends its live tokens and its old credential at once; the admin secret still
works, as the built-in admin.
"""

from __future__ import annotations

import base64
import secrets
import time
from collections.abc import Callable
from typing import Any

import httpx
import nacl.signing
import pytest
from e2e_support import RunningBroker, assert_problem, jwt_parts

from tasklease.core.tokens import ADMIN_SCOPES, ROLE_SCOPES
from tasklease.rules.messages import operator_sign_in_input

pytestmark = pytest.mark.slow

Call = Callable[[dict[str, str]], httpx.Response]


# --- helpers ---------------------------------------------------------------------------------


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def audit(broker: RunningBroker, **filters: str) -> list[dict[str, Any]]:
    """Every audit event matching ``filters``, in chain order (read as the built-in admin)."""
    found: list[dict[str, Any]] = []
    while True:
        page = broker.get(
            "/v1/audit/events",
            params={**filters, "limit": "1000", "offset": str(len(found))},
            headers=broker.admin_headers(),
        )
        assert page.status_code == 200, page.text
        body = page.json()
        found += body["events"]
        if not body["events"] or len(found) >= body["total"]:
            return found


def denial(broker: RunningBroker, resp: httpx.Response, event_type: str) -> dict[str, Any]:
    """The refusal's ``denial_id`` leads to exactly one audit event; return it."""
    denial_id = resp.json().get("denial_id")
    assert isinstance(denial_id, str) and denial_id.startswith("den_"), resp.text
    hits = [
        e
        for e in audit(broker, event_type=event_type, outcome="denied")
        if e["detail"].endswith(f"denial={denial_id}")
    ]
    assert len(hits) == 1, (denial_id, hits)
    return hits[0]


def add_operator(
    broker: RunningBroker, name: str, role: str, *, public_key: bytes | None = None
) -> dict[str, Any]:
    body: dict[str, Any] = {"name": name, "role": role}
    if public_key is not None:
        body["public_key"] = base64.b64encode(public_key).decode()
    resp = broker.post("/v1/admin/operators", json=body, headers=broker.admin_headers())
    assert resp.status_code == 201, resp.text
    return dict(resp.json())


def sign_in(broker: RunningBroker, name: str, secret: str) -> httpx.Response:
    return broker.post("/v1/operator/auth", json={"name": name, "secret": secret})


def token_of(broker: RunningBroker, name: str, secret: str) -> str:
    """An operator token; just after a re-keying (until clock_skew past it), come back
    when the answer's ``Retry-After`` says."""
    for _ in range(3):
        resp = sign_in(broker, name, secret)
        if resp.status_code != 503:
            break
        assert "changed moments ago" in resp.json()["detail"], resp.text
        time.sleep(float(resp.headers["retry-after"]))
    assert resp.status_code == 200, resp.text
    return str(resp.json()["access_token"])


def key_proof(key: nacl.signing.SigningKey, name: str, nonce: str) -> str:
    return base64.b64encode(key.sign(operator_sign_in_input(name, nonce)).signature).decode()


def fresh(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(3)}"


# --- what each role may do -------------------------------------------------------------------


def routes(broker: RunningBroker) -> dict[str, Call]:
    """One request per operator capability, each made fresh for every call."""

    def victim() -> str:
        name = fresh("victim")
        add_operator(broker, name, "auditor")
        return name

    def victim_tenant() -> str:
        name = fresh("victim")
        made = broker.post("/v1/admin/tenants", json={"name": name}, headers=broker.admin_headers())
        assert made.status_code == 201, made.text
        return name

    return {
        "create app": lambda h: broker.post(
            "/v1/admin/apps", json={"name": fresh("app"), "scopes": ["read:data:*"]}, headers=h
        ),
        "list apps": lambda h: broker.get("/v1/admin/apps", headers=h),
        "launch token": lambda h: broker.post(
            "/v1/admin/launch-tokens",
            json={"agent_name": "a", "allowed_scope": ["read:data:*"]},
            headers=h,
        ),
        "revoke": lambda h: broker.post(
            "/v1/revoke", json={"level": "task", "target": fresh("task")}, headers=h
        ),
        "read audit": lambda h: broker.get("/v1/audit/events", params={"limit": "1"}, headers=h),
        "revocation feed": lambda h: broker.get("/v1/revocations", headers=h),
        "introspect": lambda h: broker.post("/v1/introspect", json={"token": "x"}, headers=h),
        "rotate signing key": lambda h: broker.post("/v1/admin/keys/rotate", headers=h),
        "list operators": lambda h: broker.get("/v1/admin/operators", headers=h),
        "add operator": lambda h: broker.post(
            "/v1/admin/operators", json={"name": fresh("new"), "role": "auditor"}, headers=h
        ),
        "rotate operator": lambda h: broker.post(
            f"/v1/admin/operators/{victim()}/rotate", json={}, headers=h
        ),
        "remove operator": lambda h: broker.client.delete(
            f"/v1/admin/operators/{victim()}", headers=h
        ),
        "create tenant": lambda h: broker.post(
            "/v1/admin/tenants", json={"name": fresh("tenant")}, headers=h
        ),
        "list tenants": lambda h: broker.get("/v1/admin/tenants", headers=h),
        "remove tenant": lambda h: broker.client.delete(
            f"/v1/admin/tenants/{victim_tenant()}", headers=h
        ),
    }


EVERYTHING = {
    "create app",
    "list apps",
    "launch token",
    "revoke",
    "read audit",
    "revocation feed",
    "introspect",
    "rotate signing key",
    "list operators",
    "add operator",
    "rotate operator",
    "remove operator",
    "create tenant",
    "list tenants",
    "remove tenant",
}
ALLOWED = {
    "admin": EVERYTHING,
    "operator": {
        "create app",
        "list apps",
        "launch token",
        "revoke",
        "read audit",
        "revocation feed",
        "introspect",
    },
    "auditor": {"read audit"},
}


@pytest.mark.parametrize("role", ["admin", "operator", "auditor"])
def test_each_role_is_allowed_and_refused_exactly_what_it_says(
    broker: RunningBroker, role: str
) -> None:
    name = fresh(role)
    made = add_operator(broker, name, role)
    assert made["scopes"] == list(ROLE_SCOPES[role]) and made["credential"] == "secret"
    signed_in = sign_in(broker, name, made["secret"])
    assert signed_in.status_code == 200, signed_in.text
    answer = signed_in.json()
    assert answer["role"] == role and answer["scopes"] == list(ROLE_SCOPES[role])
    header, claims = jwt_parts(answer["access_token"])
    assert header["typ"] == "tasklease-admin+jwt"
    assert claims["sub"] == f"operator:{name}"
    assert claims["scope"].split(" ") == list(ROLE_SCOPES[role])
    headers = bearer(answer["access_token"])

    calls = routes(broker)
    assert set(calls) == EVERYTHING
    for what, call in calls.items():
        resp = call(headers)
        if what in ALLOWED[role]:
            assert resp.status_code < 300, (role, what, resp.text)
            continue
        if what == "introspect":  # RFC 7662 section 2.3: 401, insufficient_scope named
            assert_problem(resp, 401, "unauthorized")
            assert resp.json()["error"] == "insufficient_scope"
        else:
            assert_problem(resp, 403, "insufficient_scope")
        event = denial(broker, resp, "scope_violation")
        assert event["agent_id"] == f"operator:{name}", (what, event)
        assert f"by=operator:{name}" in event["detail"], (what, event)


# The routes the matrix above leaves out, each under the scope its module names once
# (the app registry's, the signing keys'): every one refuses the roles that lack it.
BEYOND_THE_MATRIX = {
    "show app": ("GET", "/v1/admin/apps/{app}", None, "admin:launch-tokens:*"),
    "update app": ("PUT", "/v1/admin/apps/{app}", {"token_ttl": 600}, "admin:launch-tokens:*"),
    "rotate app secret": (
        "POST",
        "/v1/admin/apps/{app}/rotate-secret",
        None,
        "admin:launch-tokens:*",
    ),
    "remove app": ("DELETE", "/v1/admin/apps/{app}", None, "admin:launch-tokens:*"),
    "retire signing key": ("POST", "/v1/admin/keys/{kid}/retire", None, "admin:keys:*"),
    "rotate audit log key": ("POST", "/v1/admin/audit/log-key/rotate", None, "admin:keys:*"),
    "list grant types": ("GET", "/v1/admin/grant-types", None, "admin:keys:*"),
    "show policy": ("GET", "/v1/admin/policy", None, "admin:keys:*"),
    "list federations": ("GET", "/v1/admin/federations", None, "admin:keys:*"),
    "list attestors": ("GET", "/v1/admin/attestors", None, "admin:keys:*"),
}


@pytest.mark.parametrize("role", ["operator", "auditor"])
def test_routes_beyond_the_matrix_refuse_the_roles_without_their_scope(
    broker: RunningBroker, role: str
) -> None:
    name = fresh(role)
    headers = bearer(token_of(broker, name, add_operator(broker, name, role)["secret"]))
    app = broker.create_app(["read:data:*"])
    kid = broker.get("/.well-known/jwks.json").json()["keys"][0]["kid"]
    refused: dict[str, httpx.Response] = {}
    for what, (method, path, body, scope) in BEYOND_THE_MATRIX.items():
        if scope in ROLE_SCOPES[role]:
            continue  # the role's own: the matrix above and the route's tests use it
        url = path.format(app=app["app_id"], kid=kid)
        refused[what] = broker.client.request(method, url, json=body, headers=headers)
    answered = {what: (r.status_code, r.json().get("error_code")) for what, r in refused.items()}
    assert answered == dict.fromkeys(refused, (403, "insufficient_scope")), answered
    for resp in refused.values():
        assert_problem(resp, 403, "insufficient_scope")
        assert resp.json()["denial_id"].startswith("den_"), resp.text
    # Nothing the refused calls asked for happened: the app is still there, as it was.
    shown = broker.get(f"/v1/admin/apps/{app['app_id']}", headers=broker.admin_headers())
    assert shown.status_code == 200 and shown.json()["status"] == "active", shown.text


def test_actions_are_audited_under_the_operators_name(broker: RunningBroker) -> None:
    ops, root = fresh("ops"), fresh("root")
    ops_token = token_of(broker, ops, add_operator(broker, ops, "operator")["secret"])
    root_token = token_of(broker, root, add_operator(broker, root, "admin")["secret"])

    app = broker.create_app(["read:data:*"])  # by the built-in admin, for the update below
    steps = [
        broker.post(
            "/v1/admin/apps",
            json={"name": fresh("named"), "scopes": ["read:data:*"]},
            headers=bearer(ops_token),
        ),
        broker.client.put(
            f"/v1/admin/apps/{app['app_id']}", json={"token_ttl": 600}, headers=bearer(ops_token)
        ),
        broker.post(
            "/v1/revoke", json={"level": "task", "target": "t-1"}, headers=bearer(ops_token)
        ),
        broker.post("/v1/admin/keys/rotate", headers=bearer(root_token)),
        broker.post(
            "/v1/admin/operators",
            json={"name": fresh("aud"), "role": "auditor"},
            headers=bearer(root_token),
        ),
    ]
    assert [r.status_code for r in steps] == [201, 200, 200, 200, 201], [r.text for r in steps]
    launch = broker.launch_token(["read:data:*"], bearer=ops_token)
    agent = broker.register(["read:data:*"], launch_token=launch)

    def detail(event_type: str, needle: str) -> str:
        hits = [e["detail"] for e in audit(broker, event_type=event_type) if needle in e["detail"]]
        assert len(hits) == 1, (event_type, needle, hits)
        return hits[0]

    assert f"by=operator:{ops}" in detail("app_registered", steps[0].json()["app_id"])
    assert f"updated_by=operator:{ops}" in detail("app_updated", app["app_id"])
    assert f"by=operator:{ops}" in detail("token_revoked", "target=t-1 ")
    assert f"by=operator:{root}" in detail("signing_key_rotated", steps[3].json()["kid"])
    assert f"by=operator:{root}" in detail("operator_added", steps[4].json()["name"])
    assert f"created_by=operator:{ops}" in detail("launch_token_issued", f"by=operator:{ops}")
    for name in (ops, root):
        (signed,) = audit(broker, event_type="operator_authenticated", agent_id=f"operator:{name}")
        assert f"operator={name} " in signed["detail"]
    # The agents an operator launches work for that operator unless it names a principal.
    assert broker.validate(agent.access_token)["claims"]["principal"] == f"operator:{ops}"


def test_removal_ends_the_live_token_and_the_credential_at_once(broker: RunningBroker) -> None:
    name = fresh("leaver")
    secret = add_operator(broker, name, "operator")["secret"]
    token = token_of(broker, name, secret)
    assert broker.get("/v1/admin/apps", headers=bearer(token)).status_code == 200

    removed = broker.client.delete(f"/v1/admin/operators/{name}", headers=broker.admin_headers())
    assert removed.status_code == 200, removed.text
    body = removed.json()
    assert body["status"] == "removed" and body["credential"] == "none" and body["removed_at"]

    after = broker.get("/v1/admin/apps", headers=bearer(token))
    assert_problem(after, 401, "unauthorized", detail="token verification failed")
    assert "revoked (level agent)" in denial(broker, after, "token_auth_failed")["detail"]
    again = sign_in(broker, name, secret)
    assert_problem(again, 401, "unauthorized", detail="invalid credentials")
    assert "operator was removed" in denial(broker, again, "operator_auth_failed")["detail"]
    listed = broker.get("/v1/admin/operators", headers=broker.admin_headers()).json()
    (kept,) = [o for o in listed["operators"] if o["name"] == name]
    assert kept["status"] == "removed"
    # Its name is never given to anyone else.
    taken = broker.post(
        "/v1/admin/operators",
        json={"name": name, "role": "auditor"},
        headers=broker.admin_headers(),
    )
    assert_problem(taken, 409, "conflict")
    assert "never reused" in denial(broker, taken, "operator_denied")["detail"]
    gone = broker.client.delete(f"/v1/admin/operators/{name}", headers=broker.admin_headers())
    assert_problem(gone, 404, "not_found")


def test_rotation_replaces_the_credential_and_ends_the_old_tokens(broker: RunningBroker) -> None:
    name = fresh("rotor")
    old_secret = add_operator(broker, name, "auditor")["secret"]
    old_token = token_of(broker, name, old_secret)
    rotated = broker.post(
        f"/v1/admin/operators/{name}/rotate", json={}, headers=broker.admin_headers()
    )
    assert rotated.status_code == 200, rotated.text
    new_secret = rotated.json()["secret"]
    assert new_secret != old_secret
    assert broker.get("/v1/audit/events", headers=bearer(old_token)).status_code == 401
    assert sign_in(broker, name, old_secret).status_code == 401
    new_token = token_of(broker, name, new_secret)
    assert broker.get("/v1/audit/events", headers=bearer(new_token)).status_code == 200


def test_key_sign_in_and_what_it_refuses(broker: RunningBroker) -> None:
    name, key = fresh("keyed"), nacl.signing.SigningKey.generate()
    made = add_operator(broker, name, "auditor", public_key=bytes(key.verify_key))
    assert made["credential"] == "key" and "secret" not in made

    nonce = broker.nonce()
    good = {"name": name, "nonce": nonce, "signature": key_proof(key, name, nonce)}
    resp = broker.post("/v1/operator/auth", json=good)
    assert resp.status_code == 200, resp.text
    assert resp.json()["role"] == "auditor"
    replayed = broker.post("/v1/operator/auth", json=good)
    assert_problem(replayed, 401, "unauthorized", detail="invalid credentials")
    assert "nonce already used" in denial(broker, replayed, "operator_auth_failed")["detail"]

    wrong_key = nacl.signing.SigningKey.generate()
    nonce = broker.nonce()
    forged = {"name": name, "nonce": nonce, "signature": key_proof(wrong_key, name, nonce)}
    resp = broker.post("/v1/operator/auth", json=forged)
    assert_problem(resp, 401, "unauthorized", detail="invalid credentials")
    event = denial(broker, resp, "operator_auth_failed")
    assert "signature does not verify" in event["detail"]
    assert event["agent_id"] == f"operator:{name}"
    # The forged attempt spent its nonce: the right signature cannot use it now.
    late = {**forged, "signature": key_proof(key, name, nonce)}
    assert broker.post("/v1/operator/auth", json=late).status_code == 401

    # An agent-style proof (the bare nonce bytes) is not an operator's.
    nonce = broker.nonce()
    bare = base64.b64encode(key.sign(bytes.fromhex(nonce)).signature).decode()
    resp = broker.post("/v1/operator/auth", json={"name": name, "nonce": nonce, "signature": bare})
    assert resp.status_code == 401
    # Nor does a key operator sign in with a secret.
    resp = sign_in(broker, name, "x" * 64)
    assert_problem(resp, 401, "unauthorized", detail="invalid credentials")
    assert "signs in with a key" in denial(broker, resp, "operator_auth_failed")["detail"]


def test_unknown_operator_and_wrong_secret_answer_alike(broker: RunningBroker) -> None:
    name = fresh("known")
    add_operator(broker, name, "auditor")
    answers = [sign_in(broker, who, "y" * 64) for who in (name, fresh("nobody"))]
    bodies = [assert_problem(r, 401, "unauthorized") for r in answers]
    assert {b["detail"] for b in bodies} == {"invalid credentials"}
    reasons = [denial(broker, r, "operator_auth_failed")["detail"] for r in answers]
    assert "wrong secret" in reasons[0] and "no such operator" in reasons[1]
    malformed = broker.post("/v1/operator/auth", json={"name": "Not Valid", "secret": "x"})
    assert_problem(malformed, 400, "invalid_request")
    both = broker.post("/v1/operator/auth", json={"name": name, "secret": "x", "nonce": "0" * 64})
    assert_problem(both, 400, "invalid_request")


def test_the_admin_secret_still_works_as_the_builtin_admin(broker: RunningBroker) -> None:
    resp = broker.post("/v1/admin/auth", json={"secret": broker.admin_secret})
    assert resp.status_code == 200, resp.text
    token = resp.json()["access_token"]
    assert set(resp.json()) == {"access_token", "expires_in", "token_type"}
    header, claims = jwt_parts(token)
    assert header["typ"] == "tasklease-admin+jwt"
    assert claims["sub"] == "admin" and claims["scope"].split(" ") == list(ADMIN_SCOPES)
    (event,) = [
        e for e in audit(broker, event_type="admin_auth") if f"jti={claims['jti']}" in e["detail"]
    ]
    assert "built-in admin" in event["detail"]
    # It holds the admin role: operators and signing keys too.
    assert broker.get("/v1/admin/operators", headers=bearer(token)).status_code == 200
    assert broker.post("/v1/admin/keys/rotate", headers=bearer(token)).status_code == 200


def test_only_an_admin_ends_an_operators_tokens_by_revocation(broker: RunningBroker) -> None:
    """An operator holds the revoke scope, which ends agents' work. Ending an operator's
    (or the built-in admin's) sessions is the admin role's, as removing or rotating one
    is: otherwise an operator could sign the admins out, again and again."""
    admin_name = fresh("keeper")
    admin_token = token_of(broker, admin_name, add_operator(broker, admin_name, "admin")["secret"])
    rogue = fresh("rogue")
    rogue_token = token_of(broker, rogue, add_operator(broker, rogue, "operator")["secret"])
    admin_jti = jwt_parts(admin_token)[1]["jti"]
    assert admin_jti.startswith("op-")
    for level, target in (
        ("agent", f"operator:{admin_name}"),
        ("chain", f"operator:{admin_name}"),
        ("agent", "admin"),
        ("token", admin_jti),  # read from the audit log, which the operator may read
        ("chain", admin_jti),
    ):
        refused = broker.post(
            "/v1/revoke", json={"level": level, "target": target}, headers=bearer(rogue_token)
        )
        assert_problem(refused, 403, "forbidden")
        event = denial(broker, refused, "token_revocation_denied")
        assert f"caller=operator:{rogue}" in event["detail"] and target in event["detail"]
    assert broker.get("/v1/admin/operators", headers=bearer(admin_token)).status_code == 200
    assert broker.get("/v1/admin/operators", headers=broker.admin_headers()).status_code == 200
    # The operator still revokes what its role is for.
    agent = broker.register(["read:data:*"])
    done = broker.post(
        "/v1/revoke",
        json={"level": "agent", "target": agent.agent_id},
        headers=bearer(rogue_token),
    )
    assert done.status_code == 200, done.text
    # An admin may end an operator's tokens this way.
    ended = broker.post(
        "/v1/revoke",
        json={"level": "agent", "target": f"operator:{rogue}"},
        headers=bearer(admin_token),
    )
    assert ended.status_code == 200, ended.text
    assert broker.get("/v1/admin/apps", headers=bearer(rogue_token)).status_code == 401
