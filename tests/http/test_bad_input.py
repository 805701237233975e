"""Bad input: each case is a precise 4xx problem, never a 500, and consumes nothing.

After every refused registration the same launch token must still register an agent,
so a client mistake (or an attacker's probe) never burns a caller's credential.
"""

from __future__ import annotations

import base64
import json
import secrets
import time
from collections.abc import Callable
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from e2e_support import RunningBroker, assert_problem, b64, b64url, jwt_parts

SCOPE = ["read:data:x"]
MAX_BODY = 1_048_576


def _without(field: str) -> Callable[[dict[str, Any]], bytes]:
    def edit(body: dict[str, Any]) -> bytes:
        return json.dumps({k: v for k, v in body.items() if k != field}).encode()

    return edit


def _with(**changes: Any) -> Callable[[dict[str, Any]], bytes]:
    def edit(body: dict[str, Any]) -> bytes:
        return json.dumps({**body, **changes}).encode()

    return edit


def _raw(data: bytes) -> Callable[[dict[str, Any]], bytes]:
    return lambda _body: data


def _wrong_signature(body: dict[str, Any]) -> bytes:
    # Valid base64 of 64 bytes, but a signature of the ASCII nonce, not its bytes.
    key = Ed25519PrivateKey.generate()
    forged = {
        **body,
        "public_key": b64(key.public_key().public_bytes_raw()),
        "signature": b64(key.sign(body["nonce"].encode())),
    }
    return json.dumps(forged).encode()


def _other_key(body: dict[str, Any]) -> bytes:
    other = Ed25519PrivateKey.generate().public_key().public_bytes_raw()
    return json.dumps({**body, "public_key": b64(other)}).encode()


# (case id, how to break a valid body, status, error_code)
REGISTER_CASES: list[tuple[str, Callable[[dict[str, Any]], bytes], int, str]] = [
    ("malformed JSON", _raw(b'{"launch_token": '), 400, "invalid_request"),
    ("empty body", _raw(b""), 400, "invalid_request"),
    ("whitespace body", _raw(b"   \n"), 400, "invalid_request"),
    ("JSON null", _raw(b"null"), 400, "invalid_request"),
    ("JSON array", _raw(b"[]"), 400, "invalid_request"),
    ("requested_scope is a string", _with(requested_scope="x"), 400, "invalid_request"),
    ("requested_scope holds a number", _with(requested_scope=[1]), 400, "invalid_request"),
    ("orch_id is a number", _with(orch_id=7), 400, "invalid_request"),
    ("nonce is an object", _with(nonce={}), 400, "invalid_request"),
    *[
        (f"missing {field}", _without(field), 400, "invalid_request")
        for field in (
            "launch_token",
            "nonce",
            "public_key",
            "signature",
            "orch_id",
            "task_id",
            "requested_scope",
        )
    ],
    *[
        (f"empty {field}", _with(**{field: ""}), 400, "invalid_request")
        for field in ("launch_token", "nonce", "public_key", "signature", "orch_id", "task_id")
    ],
    ("empty requested_scope", _with(requested_scope=[]), 400, "invalid_request"),
    ("public_key not base64", _with(public_key="!!!not-base64!!!"), 400, "invalid_request"),
    ("public_key base64url", _with(public_key=b64url(b"\xfb" * 32)), 400, "invalid_request"),
    ("public_key unpadded", _with(public_key=b64(b"k" * 32).rstrip("=")), 400, "invalid_request"),
    ("public_key 31 bytes", _with(public_key=b64(b"k" * 31)), 400, "invalid_request"),
    ("public_key 33 bytes", _with(public_key=b64(b"k" * 33)), 400, "invalid_request"),
    ("signature not base64", _with(signature="%%%%"), 400, "invalid_request"),
    ("signature 63 bytes", _with(signature=b64(b"s" * 63)), 400, "invalid_request"),
    ("orch_id with a slash", _with(orch_id="a/b"), 400, "invalid_request"),
    ("orch_id dot-dot", _with(orch_id=".."), 400, "invalid_request"),
    ("task_id with a colon", _with(task_id="t:1"), 400, "invalid_request"),
    ("task_id with a space", _with(task_id="t 1"), 400, "invalid_request"),
    ("task_id too long", _with(task_id="t" * 129), 400, "invalid_request"),
    ("malformed scope", _with(requested_scope=["read:data"]), 400, "invalid_request"),
    ("scope with empty part", _with(requested_scope=["read::x"]), 400, "invalid_request"),
    ("scope with inner star", _with(requested_scope=["read:data:cust*"]), 400, "invalid_request"),
    ("scope above the ceiling", _with(requested_scope=["write:data:x"]), 403, "scope_violation"),
    ("nonce uppercase", lambda b: _with(nonce=b["nonce"].upper())(b), 400, "invalid_request"),
    ("nonce not ours", _with(nonce=secrets.token_hex(32)), 401, "unauthorized"),
    ("nonce too short", _with(nonce="ab" * 16), 400, "invalid_request"),
    ("signature over the ASCII nonce", _wrong_signature, 401, "unauthorized"),
    ("signature by another key", _other_key, 401, "unauthorized"),
    ("unknown launch token", _with(launch_token=secrets.token_hex(32)), 401, "unauthorized"),
    ("launch token not hex", _with(launch_token="zz" * 32), 401, "unauthorized"),
    ("huge body", _raw(b'{"pad":"' + b"a" * MAX_BODY + b'"}'), 413, "payload_too_large"),
]


@pytest.fixture(scope="module")
def shared_token(broker: RunningBroker) -> str:
    """One single-use launch token that every case below must leave unspent."""
    return broker.launch_token(SCOPE, ttl=600)


@pytest.mark.parametrize(
    ("breaker", "status", "code"),
    [pytest.param(b, s, c, id=name) for name, b, s, c in REGISTER_CASES],
)
def test_register_rejects_without_consuming(
    broker: RunningBroker,
    shared_token: str,
    breaker: Callable[[dict[str, Any]], bytes],
    status: int,
    code: str,
) -> None:
    body, _ = broker.register_body(shared_token, SCOPE)
    resp = broker.post(
        "/v1/register", content=breaker(body), headers={"content-type": "application/json"}
    )
    assert_problem(resp, status, code, instance="/v1/register")


def test_shared_token_still_registers_after_every_case(
    broker: RunningBroker, shared_token: str
) -> None:
    """Runs after the matrix (definition order): the token survived all of it."""
    agent = broker.register(SCOPE, launch_token=shared_token)
    assert broker.is_valid(agent.access_token)
    # ...and now it is spent.
    body, _ = broker.register_body(shared_token, SCOPE)
    assert_problem(
        broker.post("/v1/register", json=body),
        401,
        "unauthorized",
        detail="launch token: launch token already consumed",
    )


def test_invalid_orch_id_checked_before_launch_token_is_consumed(broker: RunningBroker) -> None:
    lt = broker.launch_token(SCOPE)
    body, _ = broker.register_body(lt, SCOPE, orch_id="a/b")
    assert_problem(broker.post("/v1/register", json=body), 400, "invalid_request")
    # Signed by the key, the refused request spent its nonce (decision 262): the token
    # registers with a fresh one.
    body["orch_id"] = "a-b"
    assert_problem(broker.post("/v1/register", json=body), 401, "unauthorized")
    body, _ = broker.register_body(lt, SCOPE, orch_id="a-b")
    resp = broker.post("/v1/register", json=body)
    assert resp.status_code == 200, resp.text


def test_reused_nonce(broker: RunningBroker) -> None:
    first_lt = broker.launch_token(SCOPE)
    second_lt = broker.launch_token(SCOPE)
    body, key = broker.register_body(first_lt, SCOPE)
    assert broker.post("/v1/register", json=body).status_code == 200
    replay, _ = broker.register_body(second_lt, SCOPE, key=key, nonce=body["nonce"])
    assert_problem(
        broker.post("/v1/register", json=replay),
        401,
        "unauthorized",
        detail="nonce: nonce already consumed",
    )
    # The second launch token was not burned by the failed attempt.
    agent = broker.register(SCOPE, launch_token=second_lt)
    assert broker.is_valid(agent.access_token)


def test_failed_signature_burns_the_nonce_but_not_the_launch_token(
    broker: RunningBroker,
) -> None:
    lt = broker.launch_token(SCOPE)
    body, _ = broker.register_body(lt, SCOPE)
    assert_problem(broker.post("/v1/register", content=_wrong_signature(body)), 401, "unauthorized")
    # The nonce is spent (a failed proof must not leave it reusable)...
    good, _ = broker.register_body(lt, SCOPE, nonce=body["nonce"])
    assert_problem(broker.post("/v1/register", json=good), 401, "unauthorized")
    # ...the launch token is not.
    assert broker.register(SCOPE, launch_token=lt)


def test_reused_launch_token(broker: RunningBroker) -> None:
    lt = broker.launch_token(SCOPE)
    broker.register(SCOPE, launch_token=lt)
    body, _ = broker.register_body(lt, SCOPE)
    assert_problem(
        broker.post("/v1/register", json=body),
        401,
        "unauthorized",
        detail="launch token: launch token already consumed",
    )


def test_multi_use_launch_token(broker: RunningBroker) -> None:
    lt = broker.launch_token(SCOPE, single_use=False)
    a = broker.register(SCOPE, launch_token=lt)
    b = broker.register(SCOPE, launch_token=lt)
    assert a.agent_id != b.agent_id


def test_agent_token_ttl_follows_launch_max_ttl(broker: RunningBroker) -> None:
    agent = broker.register(SCOPE, max_ttl=45)
    assert agent.expires_in == 45
    claims = jwt_parts(agent.access_token)[1]
    assert claims["exp"] - claims["iat"] == 45


# --- other endpoints: wrong types and missing fields -------------------------------------


def test_launch_token_wrong_types(broker: RunningBroker) -> None:
    admin = broker.admin_headers()
    for body in (
        {"agent_name": "w", "allowed_scope": SCOPE, "ttl": "60"},
        {"agent_name": "w", "allowed_scope": SCOPE, "max_ttl": "60"},
        {"agent_name": "w", "allowed_scope": SCOPE, "single_use": "yes"},
        {"agent_name": "w", "allowed_scope": "read:data:x"},
        {"agent_name": 5, "allowed_scope": SCOPE},
        {"agent_name": "w", "allowed_scope": ["read:data"]},
    ):
        assert_problem(
            broker.post("/v1/admin/launch-tokens", json=body, headers=admin),
            400,
            "invalid_request",
        )


def test_delegate_wrong_types(broker: RunningBroker) -> None:
    a = broker.register(["read:data:*"])
    b = broker.register(["read:data:y"])
    for body in (
        {"delegate_to": b.agent_id, "scope": ["read:data:1"], "ttl": "60"},
        {"delegate_to": b.agent_id, "scope": "read:data:1"},
        {"delegate_to": b.agent_id, "scope": ["read:data"]},
        {"delegate_to": 1, "scope": ["read:data:1"]},
        {"scope": ["read:data:1"]},
        {"delegate_to": b.agent_id},
    ):
        assert_problem(
            broker.post("/v1/delegate", json=body, headers=a.bearer), 400, "invalid_request"
        )
    assert_problem(
        broker.post("/v1/delegate", content=b"{nope", headers=a.bearer), 400, "invalid_request"
    )
    # None of that spent the delegator's token.
    assert broker.is_valid(a.access_token)


def test_other_endpoints_reject_malformed_json(broker: RunningBroker) -> None:
    admin = broker.admin_headers()
    for path in (
        "/v1/token/validate",
        "/v1/admin/auth",
        "/v1/app/auth",
        "/v1/revoke",
        "/v1/admin/apps",
        "/v1/admin/launch-tokens",
    ):
        for raw in (b"", b"{", b'{"a":1', b"\xff\xfe"):
            assert_problem(broker.post(path, content=raw, headers=admin), 400, "invalid_request")
    assert_problem(
        broker.post("/v1/revoke", json={"level": 1, "target": "x"}, headers=admin),
        400,
        "invalid_request",
    )


def test_unicode_and_odd_json_never_500(broker: RunningBroker) -> None:
    lt = broker.launch_token(SCOPE, ttl=600)
    body, _ = broker.register_body(lt, SCOPE)
    for variant in (
        {**body, "task_id": "t\u00e9st"},
        {**body, "orch_id": "\u202e"},
        {**body, "requested_scope": ["read:data:\u0000"]},
        {**body, "requested_scope": ["read:data:x"] * 100},
        {**body, "requested_scope": ["read:data:" + "x" * 300]},
        {**body, "launch_token": "a" * 10_000},
    ):
        resp = broker.post("/v1/register", json=variant)
        assert 400 <= resp.status_code < 500, (variant, resp.text)
        assert resp.headers["content-type"] == "application/problem+json"
    assert broker.register(SCOPE, launch_token=lt)


# --- hand-made tokens on the bearer path ----------------------------------------------------


def _sign_with_broker_key(broker: RunningBroker, claims: dict[str, Any]) -> str:
    kid, key = broker.signing_key()
    header = {"alg": "EdDSA", "typ": "at+jwt", "kid": kid}
    h = b64url(json.dumps(header, separators=(",", ":")).encode())
    p = b64url(json.dumps(claims, separators=(",", ":")).encode())
    return f"{h}.{p}.{b64url(key.sign(f'{h}.{p}'.encode()))}"


def test_expired_token_signed_with_the_broker_key(broker: RunningBroker) -> None:
    agent = broker.register(["read:data:*"])
    other = broker.register(["read:data:y"])
    claims = jwt_parts(agent.access_token)[1]
    now = int(time.time())
    live = {**claims, "jti": secrets.token_hex(16), "iat": now - 10, "nbf": now - 10}
    live["exp"] = now + 60
    expired = {**live, "jti": secrets.token_hex(16), "iat": now - 600, "nbf": now - 600}
    expired |= {"exp": now - 120, "oiat": now - 600}
    live_token = _sign_with_broker_key(broker, live)
    expired_token = _sign_with_broker_key(broker, expired)
    # Control: signature and claims are right, only the expiry differs.
    assert broker.is_valid(live_token)
    assert not broker.is_valid(expired_token)
    for path, body in (
        ("/v1/token/renew", None),
        ("/v1/token/release", None),
        ("/v1/delegate", {"delegate_to": other.agent_id, "scope": ["read:data:1"]}),
    ):
        assert_problem(
            broker.post(path, json=body, headers={"Authorization": f"Bearer {expired_token}"}),
            401,
            "unauthorized",
            detail="token verification failed",
        )


def test_alg_none_and_hs256_on_the_bearer_path(broker: RunningBroker) -> None:
    import hashlib
    import hmac

    agent = broker.register(SCOPE)
    header, claims = jwt_parts(agent.access_token)
    public = broker.signing_key()[1].public_key().public_bytes_raw()

    def enc(obj: dict[str, Any]) -> str:
        return b64url(json.dumps(obj, separators=(",", ":")).encode())

    none_token = f"{enc({**header, 'alg': 'none'})}.{enc(claims)}."
    signing_input = f"{enc({**header, 'alg': 'HS256'})}.{enc(claims)}"
    hs_tokens = [
        signing_input + "." + b64url(hmac.new(k, signing_input.encode(), hashlib.sha256).digest())
        for k in (public, b64url(public).encode(), base64.b64encode(public))
    ]
    for token in (none_token, *hs_tokens):
        assert not broker.is_valid(token)
        assert_problem(
            broker.post("/v1/token/renew", headers={"Authorization": f"Bearer {token}"}),
            401,
            "unauthorized",
            detail="token verification failed",
        )


def _cursor(raw: str) -> str:
    data = raw.encode("utf-8", "surrogatepass")
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


@pytest.mark.parametrize(
    ("route", "raw"),
    [
        ("/v1/admin/revocations", '[9223372036854775807, "x"]'),
        ("/v1/admin/revocations", '[1e300, "x"]'),
        ("/v1/admin/agents", '[1, "\\ud800"]'),
        ("/v1/admin/launch-tokens", '[1, "\\ud800"]'),
        ("/v1/admin/agents", '[1, "' + "x" * 5000 + '"]'),
    ],
)
def test_a_forged_listing_cursor_is_refused(broker: RunningBroker, route: str, raw: str) -> None:
    """A cursor is the caller's input: one that no listing made (a number SQLite cannot
    hold, text it cannot bind) is a 400, never a 500 from the database."""
    resp = broker.get(route, params={"cursor": _cursor(raw)}, headers=broker.admin_headers())
    assert_problem(resp, 400, "invalid_request")
    assert resp.json()["detail"] == "cursor is malformed"


def test_a_long_path_refused_before_authentication_is_recorded_bounded(
    broker: RunningBroker,
) -> None:
    """An unauthenticated caller chooses the path a refusal records: a long one (here
    shaped to make a backtracking sanitizer take seconds) is refused at once, and the
    event keeps only its head."""
    path = "/v1/admin/tasks/secret%20" + "a-" * 4096
    resp = broker.get(path, headers={"Authorization": "Bearer x"})
    assert resp.status_code == 401, resp.text
    denial = resp.json()["denial_id"]
    events = broker.get(
        "/v1/audit/events",
        params={"event_type": "token_auth_failed", "limit": "1000"},
        headers=broker.admin_headers(),
    ).json()["events"]
    [event] = [e for e in events if f"denial={denial}" in e["detail"]]
    assert event["resource"].startswith("/v1/admin/tasks/secret a-a-")
    assert event["resource"].endswith("[truncated]") and len(event["resource"]) <= 512
    assert len(event["detail"]) <= 640, len(event["detail"])


@pytest.mark.parametrize("value", ["\u00b2", "\u0661", "1\u00b2"])
def test_a_proof_size_in_other_digits_is_a_400(broker: RunningBroker, value: str) -> None:
    """``str.isdigit`` takes superscripts and other scripts' digits, which ``int`` refuses
    or reads as another number: a tree size is ASCII digits, or a 400."""
    for path in (
        f"/v1/audit/proof/inclusion?index={value}&size=1",
        f"/v1/audit/proof/consistency?first=1&second={value}",
    ):
        resp = broker.get(path, headers=broker.admin_headers())
        assert resp.status_code == 400, (path, resp.status_code, resp.text)
        assert "must be a non-negative integer" in resp.json()["detail"]
