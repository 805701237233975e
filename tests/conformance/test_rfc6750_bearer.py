"""RFC 6750: The OAuth 2.0 Authorization Framework: Bearer Token Usage.

At the broker's protected routes and at a resource server protected by
``tasklease.verify.asgi`` (the verifier middleware), over real HTTP.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from conformance_support import SCOPE, Kit, www_authenticate
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from tasklease.verify import AppCredentials, Verifier
from tasklease.verify.asgi import TaskleaseAuthMiddleware, require_scope

NOT_APPLICABLE = {
    "s2_2 form-encoded body parameter": "MAY: tokens travel in the Authorization header only "
    "(section 2.1), which every client of the broker uses; a body holds request data",
    "s2_3 URI query parameter": "SHOULD NOT be used (section 2.3, section 5.3); not accepted "
    "(see s2_3 below)",
}

AUDIT = "/v1/audit/events"


def test_rfc6750_s2_1_scheme_is_case_insensitive_with_one_or_more_spaces(kit: Kit) -> None:
    """§2.1 (and RFC 9110 §11.1): `Bearer` matches without case; `1*SP` separates it from
    the token."""
    token = kit.admin()["Authorization"].split(" ", 1)[1]
    for header in (f"Bearer {token}", f"bearer {token}", f"BEARER {token}", f"Bearer   {token}"):
        assert kit.get(AUDIT, headers={"Authorization": header}).status_code == 200, header


def test_rfc6750_s2_3_query_parameter_is_not_a_credential(kit: Kit) -> None:
    """§2.3: the `access_token` query parameter SHOULD NOT be used: it is no credential here."""
    token = kit.admin()["Authorization"].split(" ", 1)[1]
    answer = kit.get(AUDIT, params={"access_token": token})
    assert answer.status_code == 401
    assert "error" not in www_authenticate(answer)["Bearer"]


def test_rfc6750_s3_401_carries_www_authenticate_with_realm(kit: Kit) -> None:
    """§3: a 401 carries `WWW-Authenticate` with the `Bearer` scheme (and `realm`)."""
    answer = kit.post("/v1/token/renew")
    assert answer.status_code == 401
    challenges = www_authenticate(answer)
    assert challenges["Bearer"]["realm"] == "tasklease"
    assert set(challenges) == {"Bearer", "DPoP"}


def test_rfc6750_s3_1_no_error_code_without_credentials(kit: Kit) -> None:
    """§3.1: a request without authentication (or with another scheme) gets no error code."""
    for headers in ({}, {"Authorization": "Basic dXNlcjpwYXNz"}):
        answer = kit.post("/v1/token/renew", headers=headers)
        assert answer.status_code == 401
        challenges = www_authenticate(answer)
        assert "error" not in challenges["Bearer"] and "error" not in challenges["DPoP"]
        assert "error" not in answer.json()


def test_rfc6750_s3_1_invalid_token_on_401(kit: Kit) -> None:
    """§3.1: an expired, revoked, malformed or otherwise invalid token: 401 and
    `error="invalid_token"`."""
    agent = kit.register()
    forged = agent.token[:-4] + ("AAAA" if not agent.token.endswith("AAAA") else "BBBB")
    for token in ("not-a-token", forged):
        answer = kit.post("/v1/token/renew", headers={"Authorization": f"Bearer {token}"})
        assert answer.status_code == 401
        assert www_authenticate(answer)["Bearer"]["error"] == "invalid_token"
        assert answer.json()["error"] == "invalid_token"


def test_rfc6750_s3_1_malformed_request_is_invalid_request_400(kit: Kit) -> None:
    """§3.1: a malformed request (a Bearer header without exactly one b64token) is 400
    `invalid_request`."""
    for header in ("Bearer", "Bearer a b", "Bearer a=b", "Bearer a,b"):
        answer = kit.post("/v1/token/renew", headers={"Authorization": header})
        assert answer.status_code == 400, header
        assert www_authenticate(answer)["Bearer"]["error"] == "invalid_request"
        assert answer.json()["error"] == "invalid_request"


def test_rfc6750_s3_1_insufficient_scope_has_www_authenticate(kit: Kit) -> None:
    """§3.1: a token without the privileges the request needs: 403 with
    `error="insufficient_scope"` and the `scope` it needs."""
    auditor = kit.operator_token("auditor")
    answer = kit.post(
        "/v1/revoke",
        json={"level": "token", "target": "x" * 32},
        headers={"Authorization": f"Bearer {auditor}"},
    )
    assert answer.status_code == 403
    bearer = www_authenticate(answer)["Bearer"]
    assert bearer["error"] == "insufficient_scope"
    assert bearer["scope"] == "admin:revoke:*"
    assert answer.json()["error"] == "insufficient_scope"


def test_rfc6750_s3_1_delegating_more_than_held_is_insufficient_scope(kit: Kit) -> None:
    """§3.1: asking through a token for more than it holds is `insufficient_scope`."""
    holder, other = kit.register(["read:data:42"]), kit.register(["read:data:42"])
    answer = kit.post(
        "/v1/delegate",
        json={"delegate_to": other.agent_id, "scope": ["write:data:42"]},
        headers=holder.bearer(),
    )
    assert answer.status_code == 403
    assert www_authenticate(answer)["Bearer"]["error"] == "insufficient_scope"


# --- the same rules at a resource server (tasklease.verify.asgi) ------------------------


async def _read(request: Request) -> JSONResponse:
    return JSONResponse({"ok": True})


@pytest.fixture(scope="module")
def resource_server(kit: Kit) -> Iterator[str]:
    from verify_support import serve_app  # tests/verify, beside this suite

    app_ = kit.broker.create_app(["read:data:*"], name="rs-conformance-6750")
    verifier = Verifier(
        kit.url,
        audience="tasklease",
        issuer="https://broker.conformance.example",
        credentials=AppCredentials(app_["client_id"], app_["client_secret"]),
    )
    app = Starlette(routes=[Route("/data/42", require_scope("read:data:42")(_read))])
    app.add_middleware(TaskleaseAuthMiddleware, verifier=verifier)
    served = serve_app(app)
    yield served.url
    served.stop()
    verifier.close()


def _rs(url: str, **kwargs: Any) -> httpx.Response:
    return httpx.get(f"{url}/data/42", timeout=10, **kwargs)


def test_rfc6750_s3_1_resource_server_no_error_code_without_credentials(
    resource_server: str,
) -> None:
    """§3.1 at a resource server: no credential, no error code (the verifier middleware)."""
    answer = _rs(resource_server)
    assert answer.status_code == 401
    challenges = www_authenticate(answer)
    assert challenges["Bearer"] == {"realm": "tasklease"}
    assert "error" not in answer.json()


def test_rfc6750_s3_1_resource_server_invalid_token(resource_server: str, kit: Kit) -> None:
    """§3.1 at a resource server: an invalid token is 401 `invalid_token`."""
    answer = _rs(resource_server, headers={"Authorization": "Bearer not.a.token"})
    assert answer.status_code == 401
    assert www_authenticate(answer)["Bearer"]["error"] == "invalid_token"


def test_rfc6750_s3_1_resource_server_insufficient_scope(resource_server: str, kit: Kit) -> None:
    """§3.1 at a resource server: 403 `insufficient_scope` naming the scope."""
    agent = kit.register(["write:data:42"])
    answer = _rs(resource_server, headers=agent.bearer())
    assert answer.status_code == 403
    bearer = www_authenticate(answer)["Bearer"]
    assert bearer == {"realm": "tasklease", "error": "insufficient_scope", "scope": "read:data:42"}
    ok = _rs(resource_server, headers=kit.register(SCOPE).bearer())
    assert ok.status_code == 200, ok.text


def test_rfc6750_s3_1_resource_server_malformed_header(resource_server: str) -> None:
    """§3.1 at a resource server: a malformed Bearer header is 400 `invalid_request`."""
    answer = _rs(resource_server, headers={"Authorization": "Bearer a b"})
    assert answer.status_code == 400
    assert www_authenticate(answer)["Bearer"]["error"] == "invalid_request"
