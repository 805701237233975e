"""A JSON body that gives a member name twice in one object is refused (400), on every
route that reads JSON, before its route acts on it.

RFC 8259 section 4 leaves such an object's meaning to each parser: msgspec, like most,
keeps the last value; others keep the first. A proxy, a log or a policy engine reading
the same bytes as the broker would then see another request than the one the broker
acted on (``{"allowed_scope":["read:a"],"allowed_scope":["admin:*"]}``).
"""

from __future__ import annotations

import httpx
import pytest
from e2e_support import RunningBroker, assert_problem

from tasklease.rules.jsonnames import repeated_name

# Routes that read a JSON body before any credential is checked; the form-or-JSON token
# routes included.
OPEN_JSON_ROUTES = [
    "/v1/register",
    "/v1/admin/auth",
    "/v1/app/auth",
    "/v1/token/validate",
    "/v1/token/revoke",
    "/v1/introspect",
    "/v1/oauth/token",
    "/v1/mutual/respond",
    "/v1/resume",
]


def _post_raw(broker: RunningBroker, path: str, body: bytes, **headers: str) -> httpx.Response:
    return broker.post(path, content=body, headers={"Content-Type": "application/json", **headers})


@pytest.mark.parametrize("path", OPEN_JSON_ROUTES)
def test_a_repeated_name_is_a_400_on_every_open_json_route(
    broker: RunningBroker, path: str
) -> None:
    resp = _post_raw(broker, path, b'{"token": "a", "nonce": "b", "token": "c"}')
    assert_problem(
        resp,
        400,
        "invalid_request",
        detail="malformed JSON body: `token` is given twice in one object",
    )


def test_a_repeated_scope_creates_no_launch_token(broker: RunningBroker) -> None:
    """The case that matters: two ceilings in one request, and which one wins depends on
    the parser. Nothing is created."""
    auth = {"Authorization": f"Bearer {broker.admin_token()}"}
    before = broker.get("/v1/admin/launch-tokens", headers=auth).json()
    body = (
        b'{"agent_name": "twice", "allowed_scope": ["read:data:*"],'
        b' "allowed_scope": ["admin:revoke:*"]}'
    )
    resp = _post_raw(broker, "/v1/admin/launch-tokens", body, **auth)
    assert_problem(
        resp,
        400,
        "invalid_request",
        detail="malformed JSON body: `allowed_scope` is given twice in one object",
    )
    after = broker.get("/v1/admin/launch-tokens", headers=auth).json()
    assert after == before
    # The same request with the name once is served.
    once = b'{"agent_name": "once", "allowed_scope": ["read:data:*"]}'
    assert _post_raw(broker, "/v1/admin/launch-tokens", once, **auth).status_code == 201


def test_a_repeated_name_deep_inside_is_refused(broker: RunningBroker) -> None:
    auth = {"Authorization": f"Bearer {broker.admin_token()}"}
    body = (
        b'{"agent_name": "deep", "allowed_scope": ["read:data:*"],'
        b' "attest": {"claims": [{"k": 1, "k": 2}]}}'
    )
    resp = _post_raw(broker, "/v1/admin/launch-tokens", body, **auth)
    assert_problem(
        resp, 400, "invalid_request", detail="malformed JSON body: `k` is given twice in one object"
    )


def test_form_bodies_keep_their_own_rule(broker: RunningBroker) -> None:
    """A form's repeated parameter was refused already (RFC 6749 section 3.1)."""
    resp = broker.post(
        "/v1/introspect",
        content=b"token=a&token=b",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert resp.status_code == 400 and "more than once" in resp.json()["detail"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (b'{"a": 1, "a": 1}', "a"),
        (b'{"a": 1, "b": {"c": 1, "c": 2}}', "c"),
        (b'[{"a": 1}, {"a": 2}, {"x": [], "x": []}]', "x"),
        # Escapes name the same member: "\u0061" is "a".
        (b'{"a": 1, "\\u0061": 2}', "a"),
        (b'{"a": {"a": {"a": 1}}}', None),  # the same name in different objects
        (b'{"a": 1, "A": 2}', None),  # names are case-sensitive
        (b'{"a": 1, "a": ', None),  # not JSON: its decoder answers that
        (b'{"\xff": 1, "\xff": 2}', None),  # not UTF-8: likewise
        (b"[]", None),
    ],
)
def test_repeated_name(text: bytes, expected: str | None) -> None:
    assert repeated_name(text) == expected


def test_a_name_that_cannot_be_shown_is_not_echoed(broker: RunningBroker) -> None:
    name = "n" * 65
    body = f'{{"{name}": 1, "{name}": 2}}'.encode()
    resp = _post_raw(broker, "/v1/register", body)
    assert_problem(
        resp,
        400,
        "invalid_request",
        detail="malformed JSON body: a name is given twice in one object",
    )


# JSON carried as text inside a field is read by the same rule as a body: a form's
# `authorization_details` (RFC 9396 section 6) and an app's `public_key` given as a JWK.
TEXT_FIELD_CASES = [
    ('[{"type": "resource_access", "type": "scope"}]', "`type` is given twice in one object"),
    ("[" * 1000, "nested deeper than 32 levels"),  # a decoder would run out of stack
    ('[{"type": "resource_access", "limits": {"n": 1e999}}]', "number out of range"),
]


@pytest.mark.parametrize(("text", "why"), TEXT_FIELD_CASES)
def test_authorization_details_in_a_form_are_read_as_strictly_as_a_body(
    broker: RunningBroker, text: str, why: str
) -> None:
    agent = broker.register(["read:data:*"])
    resp = broker.post(
        "/v1/oauth/token",
        data={
            "grant_type": "urn:ietf:params:oauth:grant-type:token-exchange",
            "subject_token": agent.access_token,
            "subject_token_type": "urn:ietf:params:oauth:token-type:access_token",
            "authorization_details": text,
        },
    )
    assert resp.status_code == 400, resp.text
    body = resp.json()
    assert body["error"] == "invalid_authorization_details", body
    assert f"authorization_details: {why}" in body["error_description"]


@pytest.mark.parametrize("twice", ["x", "kty"])
def test_a_jwk_given_as_text_may_not_repeat_a_member(broker: RunningBroker, twice: str) -> None:
    """Two keys in one JWK text: which one the broker stored would depend on its parser."""
    app = broker.create_app(["read:data:*"])
    first, second = "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo", "A" * 43
    members = {"kty": ('"OKP"', '"OKP"'), "x": (f'"{first}"', f'"{second}"')}[twice]
    rest = ', "kty": "OKP"' if twice == "x" else f', "x": "{first}"'
    jwk = f'{{"crv": "Ed25519", "{twice}": {members[0]}, "{twice}": {members[1]}{rest}}}'
    resp = broker.client.put(
        f"/v1/admin/apps/{app['app_id']}",
        json={"public_key": jwk},
        headers=broker.admin_headers(),
    )
    assert_problem(resp, 400, "invalid_request")
    assert f"`{twice}` is given twice in one object" in resp.json()["detail"]
    stored = broker.get(f"/v1/admin/apps/{app['app_id']}", headers=broker.admin_headers())
    assert "public_key" not in stored.json()
