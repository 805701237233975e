"""Zero-trust validation: every claim checked, one generic failure outward."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from tasklease.core.broker import RequestContext
from tasklease.core.errors import InsufficientScope, InvalidRequest, Unauthorized
from tasklease.core.keys import KeyRing
from tasklease.core.store import AuditQuery
from tasklease.core.tokens import ADMIN_SCOPES, KIND_ADMIN, KIND_AGENT, KIND_APP, mint
from tasklease.core.validation import TokenRejected
from tasklease.rules import jws
from tasklease.verify import InvalidToken, Verifier

CTX = RequestContext(request_id="req-v", remote="10.0.0.1", path="/v1/things")
SUB = "spiffe://tasklease.local/agent/o/t/00000000000000aa"


def auth_failures(broker: Any) -> list[Any]:
    return broker.store.query_audit(AuditQuery(event_type="token_auth_failed", limit=1000))[0]


def agent_token(broker: Any, keyring: KeyRing | None = None, **overrides: Any) -> str:
    cfg = broker.config
    args: dict[str, Any] = {
        "kind": KIND_AGENT,
        "iss": cfg.issuer,
        "sub": SUB,
        "aud": cfg.audience,
        "iat": int(broker.clock.now()),
        "ttl": 300,
        "scope": ("read:data:1",),
        "client_id": "admin",
        "task_id": "t",
        "orch_id": "o",
    }
    args.update(overrides)
    return mint(keyring or broker.keyring, **args)[0]


def signed(broker: Any, payload: dict[str, Any], typ: str = KIND_AGENT) -> str:
    return str(broker.keyring.sign(json.dumps(payload).encode(), typ))


def base_payload(broker: Any) -> dict[str, Any]:
    now = int(broker.clock.now())
    return {
        "iss": "tasklease",
        "sub": SUB,
        "aud": ["tasklease"],
        "exp": now + 300,
        "nbf": now,
        "iat": now,
        "jti": "0" * 32,
        "scope": ["read:data:1"],
        "client_id": "admin",
    }


def rejected(broker: Any, token: str, reason: str) -> None:
    """``validate`` refuses with ``reason``; ``authenticate`` refuses generically and audits it."""
    with pytest.raises(TokenRejected) as info:
        broker.validate(token)
    assert reason in info.value.reason
    before = len(auth_failures(broker))
    with pytest.raises(Unauthorized) as outward:
        broker.authenticate(f"Bearer {token}", CTX)
    assert outward.value.detail == "token verification failed"
    assert outward.value.code == "unauthorized"
    assert reason in outward.value.reason
    failures = auth_failures(broker)
    assert len(failures) == before + 1
    assert reason in failures[-1].detail
    assert failures[-1].detail.startswith("token verification failed: ")
    assert failures[-1].outcome == "denied"
    assert failures[-1].resource == "/v1/things"
    assert token not in failures[-1].detail
    assert failures[-1].detail.endswith(f"| denial={outward.value.denial_id}")


def test_a_fresh_token_validates(broker: Any) -> None:
    token = agent_token(broker)
    assert broker.validate(token).sub == SUB
    assert broker.authenticate(f"Bearer {token}", CTX).sub == SUB


def test_a_token_is_dead_at_its_exp(broker: Any, clock: Any) -> None:
    """No clock skew on ``exp`` (RFC 7519 section 4.1.4: not accepted on or after it)."""
    token = agent_token(broker)
    exp = int(clock.now()) + 300
    for at, ok in ((exp - 1, True), (exp - 0.001, True), (exp, False), (exp + 0.5, False)):
        clock.set(at)
        if ok:
            assert broker.validate(token).exp == exp
        else:
            with pytest.raises(TokenRejected, match="expired") as info:
                broker.validate(token)
            assert info.value.category == "expired"
    clock.set(exp + 1)
    rejected(broker, token, "token expired")


def _verifier(broker: Any, **options: Any) -> Verifier:
    jwks = broker.keyring.jwks()
    return Verifier(
        "https://broker.invalid",
        audience=broker.config.audience[0],
        issuer=broker.config.issuer,
        feed=False,
        clock=broker.clock,
        transport=httpx.MockTransport(lambda _request: httpx.Response(200, json=jwks)),
        **options,
    )


def test_a_five_second_token_is_refused_after_five_seconds(
    make_broker: Any, kit: Any, clock: Any
) -> None:
    """AgentWrit's SDK acceptance story 10: a 5 s token is invalid after 7 s; with the
    30 s skew on exp it used to pass. The broker and a default verifier agree; only a
    verifier configured with exp_leeway still accepts it."""
    broker = make_broker(clock=clock)
    agent = kit.register(broker, kit.launch(broker, max_ttl=5))
    iat = agent.claims.iat
    assert agent.claims.exp == iat + 5
    with _verifier(broker) as default, _verifier(broker, exp_leeway=10) as lenient:
        assert broker.validate(agent.token).jti == default.verify(agent.token).jti
        for after in (5, 7):
            clock.set(iat + after)
            with pytest.raises(TokenRejected, match="token expired"):
                broker.validate(agent.token)
            with pytest.raises(InvalidToken) as refused:
                default.verify(agent.token)  # cached since the first call: still refused
            assert refused.value.reason == "token expired"
        assert lenient.verify(agent.token).jti == agent.claims.jti
        clock.set(iat + 15)
        with pytest.raises(InvalidToken, match="token verification failed"):
            lenient.verify(agent.token)


def test_not_yet_valid_beyond_skew(broker: Any, clock: Any) -> None:
    now = int(clock.now())
    # 20 s ahead (a broker replica whose clock runs ahead): within the 30 s skew.
    future = agent_token(broker, iat=now + 20)
    assert broker.validate(future).iat == now + 20
    with _verifier(broker) as verifier:
        assert verifier.verify(future).nbf == now + 20
    assert broker.validate(agent_token(broker, iat=now + 30)).iat == now + 30
    rejected(broker, agent_token(broker, iat=now + 31), "not yet valid")
    # iat in the future with nbf now: still refused.
    payload = base_payload(broker)
    payload["iat"] = now + 31
    payload["exp"] = now + 331
    rejected(broker, signed(broker, payload), "issued in the future")


def test_wrong_issuer(broker: Any) -> None:
    rejected(broker, agent_token(broker, iss="someone-else"), "issuer mismatch")
    rejected(broker, agent_token(broker, iss=""), "issuer mismatch")


def test_wrong_audience(broker: Any) -> None:
    # An agent token audience-bound to a resource still manages itself at the broker
    # (docs/decisions.md, "Audience-bound tokens"), so only validate() refuses it; the empty
    # audience is refused everywhere.
    other = agent_token(broker, aud=("other",))
    with pytest.raises(TokenRejected, match="audience mismatch"):
        broker.validate(other)
    assert broker.authenticate(f"Bearer {other}", CTX).aud == ("other",)
    rejected(broker, agent_token(broker, aud=()), "audience")
    token = agent_token(broker, aud=("tasklease", "mcp://files"))
    assert broker.validate(token, audience="mcp://files").aud == ("tasklease", "mcp://files")
    with pytest.raises(TokenRejected, match="audience"):
        broker.validate(agent_token(broker), audience="mcp://files")


def test_lifetime_longer_than_max_ttl(broker: Any) -> None:
    max_ttl = broker.config.max_ttl
    assert broker.validate(agent_token(broker, ttl=max_ttl))
    rejected(broker, agent_token(broker, ttl=max_ttl + 1), "lifetime")
    rejected(broker, agent_token(broker, ttl=0), "token expired")  # dead on arrival
    # exp before iat, both in the future (iat within the skew): the lifetime refuses it.
    payload = base_payload(broker)
    payload.update(iat=payload["iat"] + 20, exp=payload["iat"] + 10)
    rejected(broker, signed(broker, payload), "lifetime")


def test_max_exp_bounds_the_token(broker: Any) -> None:
    payload = base_payload(broker)
    assert broker.validate(signed(broker, {**payload, "max_exp": payload["exp"]}))
    rejected(broker, signed(broker, {**payload, "max_exp": payload["exp"] - 1}), "max_exp")


def test_unknown_key_and_bad_signature(broker: Any) -> None:
    rejected(broker, agent_token(broker, keyring=KeyRing.generate()), "unknown kid")
    token = agent_token(broker)
    head, body, sig = token.split(".")
    flipped = sig[:10] + ("A" if sig[10] != "A" else "B") + sig[11:]
    rejected(broker, f"{head}.{body}.{flipped}", "signature")
    rejected(broker, "not.a.jwt", "")
    rejected(broker, "x" * 9000, "too large")


def test_claim_types_are_checked(broker: Any) -> None:
    payload = base_payload(broker)
    payload["exp"] = str(payload["exp"])
    rejected(broker, signed(broker, payload), "claim exp")
    for bad in (7, ["read:data:1", 2], " read:data:1", "read:data:1  write:data:2"):
        payload = base_payload(broker)
        payload["scope"] = bad
        rejected(broker, signed(broker, payload), "claim scope")
    payload = base_payload(broker)
    del payload["sub"]
    rejected(broker, signed(broker, payload), "claim sub")


def test_admin_token_is_not_an_agent_token(broker: Any, kit: Any) -> None:
    admin = kit.admin(broker)
    with pytest.raises(TokenRejected, match="typ not allowed"):
        broker.validate(admin.token)
    app = kit.app(broker)
    with pytest.raises(TokenRejected, match="typ not allowed"):
        broker.validate(app.token)
    # The same claims under the agent typ would be accepted: only the kind was wrong.
    assert broker.validate(signed(broker, dict(admin.claims.raw), KIND_AGENT)).sub == "admin"
    # authenticate accepts every kind by default.
    assert broker.authenticate(f"Bearer {admin.token}", CTX).kind == KIND_ADMIN
    assert broker.authenticate(f"Bearer {app.token}", CTX).kind == KIND_APP


def test_agent_token_where_only_admin_is_accepted(broker: Any, kit: Any) -> None:
    token = agent_token(broker, scope=ADMIN_SCOPES)  # even with admin-looking scopes
    with pytest.raises(InsufficientScope) as info:
        broker.authenticate(f"Bearer {token}", CTX, kinds=frozenset({KIND_ADMIN}))
    assert info.value.code == "insufficient_scope"
    violations = broker.store.query_audit(AuditQuery(event_type="scope_violation"))[0]
    assert len(violations) == 1
    assert "token kind at+jwt not accepted" in violations[0].detail
    assert violations[0].agent_id == SUB


def test_required_scope(broker: Any, kit: Any) -> None:
    token = agent_token(broker, scope=("read:data:*",))
    assert broker.authenticate(f"Bearer {token}", CTX, scope="read:data:42")
    with pytest.raises(InsufficientScope):
        broker.authenticate(f"Bearer {token}", CTX, scope="write:data:42")
    admin = kit.admin(broker)
    assert broker.authenticate(
        f"Bearer {admin.token}", CTX, kinds=frozenset({KIND_ADMIN}), scope="admin:revoke:*"
    )


@pytest.mark.parametrize(
    ("header", "detail", "audited"),
    [
        (None, "missing authorization header", "missing authorization header"),
        ("", "missing authorization header", "missing authorization header"),
        ("Basic dXNlcjpwYXNz", "invalid authorization scheme", "invalid authorization scheme"),
        ("Bearer", "malformed authorization header", "not one token"),
        ("Bearer ", "malformed authorization header", "not one token"),
        ("Bearer a b", "malformed authorization header", "not one token"),
        ("bearer abc", "token verification failed", "3 segments"),
        ("Bearer abc", "token verification failed", "3 segments"),
    ],
)
def test_missing_or_invalid_authorization_header(
    broker: Any, header: str | None, detail: str, audited: str
) -> None:
    with pytest.raises((Unauthorized, InvalidRequest)) as info:
        broker.authenticate(header, CTX)
    assert info.value.detail == detail
    # A malformed Bearer header is invalid_request (RFC 6750 section 3.1); a missing one
    # or another scheme names no error; a token that fails is invalid_token.
    expected = {
        "malformed authorization header": ("Bearer", "invalid_request"),
        "token verification failed": ("Bearer", "invalid_token"),
    }.get(detail)
    assert info.value.challenge == expected
    failures = auth_failures(broker)
    assert len(failures) == 1
    assert audited in failures[0].detail
    assert failures[0].detail.endswith(f"| path=/v1/things | denial={info.value.denial_id}")
    assert failures[0].request_id == "req-v"


@pytest.mark.parametrize("template", ["bearer {}", "BEARER {}", "Bearer  {}", " Bearer {} "])
def test_scheme_without_case_and_any_spaces(broker: Any, template: str) -> None:
    # RFC 9110 section 11.1: the scheme is case-insensitive; RFC 6750 section 2.1: 1*SP.
    # (This test once asserted that a second space made the token invalid.)
    token = agent_token(broker)
    assert broker.authenticate(template.format(token), CTX).kind == KIND_AGENT


def test_jws_header_allow_list(broker: Any) -> None:
    """alg none / HS256 / extra header parameters never reach a key."""
    token = agent_token(broker)
    _, body, sig = token.split(".")
    for header in (
        {"alg": "none", "typ": KIND_AGENT, "kid": broker.keyring.active_kid},
        {"alg": "HS256", "typ": KIND_AGENT, "kid": broker.keyring.active_kid},
        {"alg": "EdDSA", "typ": KIND_AGENT, "kid": broker.keyring.active_kid, "jku": "x"},
        {"alg": "EdDSA", "typ": KIND_AGENT},
    ):
        forged = jws.b64url_encode(json.dumps(header).encode()) + "." + body + "." + sig
        with pytest.raises(TokenRejected):
            broker.validate(forged)
