"""RFC 7662: OAuth 2.0 Token Introspection.

``POST /v1/introspect``: requests are sent by an independent client (authlib's
``OAuth2Client.introspect_token``, form-encoded), the answers read as section 2.2 defines
them.
"""

from __future__ import annotations

from collections.abc import Generator, Iterator
from typing import Any

import httpx2  # what authlib's httpx client is built on
import pytest
from authlib.integrations.httpx_client import OAuth2Client
from conformance_support import SCOPE, Kit, www_authenticate

NOT_APPLICABLE = {
    "s2_1 token_type_hint for refresh tokens": "the broker issues no refresh tokens (an agent "
    "renews with its token); the hint is accepted and ignored",
}


class _BearerAuth(httpx2.Auth):
    """The protected resource authorizes with a bearer token (section 2.1 allows it)."""

    def __init__(self, token: str) -> None:
        self.token = token

    def auth_flow(
        self, request: httpx2.Request
    ) -> Generator[httpx2.Request, httpx2.Response, None]:
        request.headers["Authorization"] = f"Bearer {self.token}"
        yield request


@pytest.fixture
def client(kit: Kit, monkeypatch: pytest.MonkeyPatch) -> Iterator[OAuth2Client]:
    monkeypatch.setenv("AUTHLIB_INSECURE_TRANSPORT", "1")  # loopback HTTP in tests
    with OAuth2Client(base_url=kit.url) as oauth:
        yield oauth


def _introspect(client: OAuth2Client, kit: Kit, token: str, caller: str) -> httpx2.Response:
    answer: httpx2.Response = client.introspect_token(
        f"{kit.url}/v1/introspect", token=token, auth=_BearerAuth(caller)
    )
    return answer


def test_rfc7662_s2_1_form_encoded_request_is_answered(client: OAuth2Client, kit: Kit) -> None:
    """§2.1: a form-encoded `token` (with `token_type_hint`) from an authorized caller."""
    agent = kit.register(SCOPE)
    answer = client.introspect_token(
        f"{kit.url}/v1/introspect",
        token=agent.token,
        token_type_hint="access_token",
        auth=_BearerAuth(kit.app_token()),
    )
    assert answer.status_code == 200, answer.text
    assert answer.request.headers["content-type"] == "application/x-www-form-urlencoded"


def test_rfc7662_s2_2_active_token_claims(client: OAuth2Client, kit: Kit) -> None:
    """§2.2: `active: true` with `scope` (space-separated), `client_id`, `token_type`,
    `exp`, `iat`, `sub`, `aud`, `iss`, `jti`."""
    agent = kit.register(SCOPE)
    admin = kit.admin()["Authorization"].split(" ", 1)[1]
    body: dict[str, Any] = _introspect(client, kit, agent.token, admin).json()
    assert body["active"] is True
    assert body["scope"] == " ".join(SCOPE)
    assert body["token_type"] == "Bearer" and body["sub"] == agent.agent_id
    for name in ("client_id", "exp", "iat", "aud", "iss", "jti"):
        assert name in body, name


def test_rfc7662_s2_2_inactive_is_only_active_false(client: OAuth2Client, kit: Kit) -> None:
    """§2.2: for a token that is not active (unknown, forged, revoked) the answer is
    `{"active": false}` and nothing else."""
    admin = kit.admin()["Authorization"].split(" ", 1)[1]
    agent = kit.register()
    released = kit.post("/v1/token/release", headers=agent.bearer())
    assert released.status_code == 204
    for token in ("unknown", agent.token, agent.token[:-2] + "xx"):
        assert _introspect(client, kit, token, admin).json() == {"active": False}


def test_rfc7662_s2_1_the_caller_must_be_authorized(client: OAuth2Client, kit: Kit) -> None:
    """§2.1 and §4: the endpoint requires authorization (no token scanning): without it, 401
    with `WWW-Authenticate`."""
    answer = kit.post("/v1/introspect", data={"token": kit.register().token})
    assert answer.status_code == 401
    assert "Bearer" in www_authenticate(answer)


def test_rfc7662_s2_3_an_under_privileged_caller_gets_401(client: OAuth2Client, kit: Kit) -> None:
    """§2.3: a bearer token without sufficient privileges for introspection is answered
    with 401 and a `WWW-Authenticate` error (RFC 6750 §3)."""
    agent = kit.register()
    for caller in (agent.token, kit.operator_token("auditor")):
        answer = _introspect(client, kit, agent.token, caller)
        assert answer.status_code == 401, answer.text
        assert www_authenticate(answer)["Bearer"]["error"] == "insufficient_scope"
        assert answer.json()["error"] == "insufficient_scope"


def test_rfc7662_s2_3_malformed_request_has_an_oauth_error(kit: Kit) -> None:
    """§2.3 (RFC 6749 §5.2): a request without `token` is 400 with `error`."""
    admin = kit.admin()
    for data in ({"token_type_hint": "access_token"}, {"token": "a", "x": "1&token=b"}):
        answer = kit.post("/v1/introspect", data=data, headers=admin)
        if answer.status_code == 200:
            continue  # an unknown extra parameter is ignored (section 2.1)
        assert answer.status_code == 400
        assert answer.json()["error"] == "invalid_request"
    answer = kit.post("/v1/introspect", content=b"token=a&token=b", headers={
        **admin, "Content-Type": "application/x-www-form-urlencoded"})  # fmt: skip
    assert answer.status_code == 400 and answer.json()["error"] == "invalid_request"
