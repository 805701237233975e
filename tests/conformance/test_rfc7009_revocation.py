"""RFC 7009: OAuth 2.0 Token Revocation.

``POST /v1/token/revoke``: a token holder revokes its own tokens; the requests come from
an independent client (authlib's ``OAuth2Client.revoke_token``, form-encoded).
"""

from __future__ import annotations

from collections.abc import Generator, Iterator

import httpx2  # what authlib's httpx client is built on
import pytest
from authlib.integrations.httpx_client import OAuth2Client
from conformance_support import Kit, www_authenticate

NOT_APPLICABLE = {
    "s2_1 refresh tokens and their access tokens": "the broker issues no refresh tokens",
    "s2_2_1 unsupported_token_type": "never sent: every token the broker issues can be revoked, "
    "and the hint is only a hint (section 2.1)",
    "s2_1 client authentication": "the caller authenticates with its own agent token (section "
    "2.1 allows other means than client credentials for public clients)",
}


class _BearerAuth(httpx2.Auth):
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


def _revoke(
    client: OAuth2Client, kit: Kit, token: str, caller: str, **extra: str
) -> httpx2.Response:
    answer: httpx2.Response = client.revoke_token(
        f"{kit.url}/v1/token/revoke", token=token, auth=_BearerAuth(caller), **extra
    )
    return answer


def test_rfc7009_s2_1_form_encoded_revocation_ends_the_token(
    client: OAuth2Client, kit: Kit
) -> None:
    """§2.1 and §2.2: a form-encoded `token` is revoked: 200, and the token is no longer
    valid."""
    agent = kit.register()
    answer = _revoke(client, kit, agent.token, agent.token)
    assert answer.status_code == 200 and answer.json() == {}
    assert kit.validate(agent.token)["valid"] is False


def test_rfc7009_s2_2_unknown_or_invalid_tokens_answer_200(client: OAuth2Client, kit: Kit) -> None:
    """§2.2: an invalid or unknown token is answered 200 (nothing tells it existed)."""
    agent = kit.register()
    for token in ("not-a-token", agent.token[:-3] + "abc", "a.b.c"):
        answer = _revoke(client, kit, token, agent.token)
        assert answer.status_code == 200 and answer.json() == {}, token
    assert kit.validate(agent.token)["valid"] is True


def test_rfc7009_s2_1_token_type_hint_is_only_a_hint(client: OAuth2Client, kit: Kit) -> None:
    """§2.1: a wrong `token_type_hint` does not stop the revocation."""
    agent = kit.register()
    answer = _revoke(client, kit, agent.token, agent.token, token_type_hint="refresh_token")
    assert answer.status_code == 200
    assert kit.validate(agent.token)["valid"] is False


def test_rfc7009_s2_1_a_token_of_another_client_is_refused(client: OAuth2Client, kit: Kit) -> None:
    """§2.1: the server verifies the token was issued to the caller; if not, the request is
    refused with an error (RFC 6749 §5.2 `unauthorized_client`)."""
    mine, theirs = kit.register(), kit.register()
    answer = _revoke(client, kit, theirs.token, mine.token)
    assert answer.status_code == 403
    assert answer.json()["error"] == "unauthorized_client"
    assert kit.validate(theirs.token)["valid"] is True


def test_rfc7009_s2_2_1_errors_carry_the_oauth_error_member(kit: Kit) -> None:
    """§2.2.1 (RFC 6749 §5.2): a malformed request is 400 with `error: invalid_request`;
    an unauthenticated one 401 with `WWW-Authenticate`."""
    agent = kit.register()
    answer = kit.post(
        "/v1/token/revoke",
        content=b"token_type_hint=access_token",
        headers={**agent.bearer(), "Content-Type": "application/x-www-form-urlencoded"},
    )
    assert answer.status_code == 400 and answer.json()["error"] == "invalid_request"
    answer = kit.post("/v1/token/revoke", data={"token": agent.token})
    assert answer.status_code == 401 and "Bearer" in www_authenticate(answer)
