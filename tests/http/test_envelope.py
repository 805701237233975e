"""The response envelope: request ids, security headers, the body cap, rate limiting."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator

import httpx
import pytest
from e2e_support import RunningBroker, assert_problem

MAX_BODY = 1_048_576
SECURITY_HEADERS = {
    "x-content-type-options": "nosniff",
    "cache-control": "no-store",
    "x-frame-options": "DENY",
}


def assert_envelope(resp: httpx.Response, request_id: str | None = None) -> None:
    """The security headers, each exactly once, and the request id."""
    for name, value in SECURITY_HEADERS.items():
        values = resp.headers.get_list(name)
        assert values == [value], (resp.request.url.path, resp.status_code, name, values)
    assert len(resp.headers.get_list("x-request-id")) == 1
    if request_id is None:
        assert re.fullmatch(r"[0-9a-f]{16}", resp.headers["x-request-id"]), resp.headers
    else:
        assert resp.headers["x-request-id"] == request_id


def _requests(broker: RunningBroker) -> list[tuple[str, Callable[..., httpx.Response], int]]:
    c = broker.client
    return [
        ("health 200", lambda **kw: c.get("/v1/health", **kw), 200),
        ("challenge 200", lambda **kw: c.get("/v1/challenge", **kw), 200),
        ("metrics elsewhere 404", lambda **kw: c.get("/v1/metrics", **kw), 404),
        ("validate 200", lambda **kw: c.post("/v1/token/validate", json={"token": "x"}, **kw), 200),
        ("bad json 400", lambda **kw: c.post("/v1/register", content=b"{", **kw), 400),
        ("no bearer 401", lambda **kw: c.post("/v1/token/renew", **kw), 401),
        ("unknown path 404", lambda **kw: c.get("/v1/nope", **kw), 404),
        ("wrong method 405", lambda **kw: c.delete("/v1/register", **kw), 405),
        ("wrong method 405", lambda **kw: c.get("/v1/revoke", **kw), 405),
        (
            "too large 413",
            lambda **kw: c.post("/v1/token/validate", content=b" " * (MAX_BODY + 1), **kw),
            413,
        ),
    ]


def test_every_response_has_the_envelope(broker: RunningBroker) -> None:
    for name, send, status in _requests(broker):
        generated = send()
        assert generated.status_code == status, (name, generated.text)
        assert_envelope(generated)
        echoed = send(headers={"X-Request-ID": "caller-id.42:abc"})
        assert echoed.status_code == status, name
        assert_envelope(echoed, "caller-id.42:abc")
        if status >= 400:
            body = assert_problem(echoed, status, echoed.json()["error_code"])
            assert body["request_id"] == "caller-id.42:abc"


def test_jwks_has_one_cache_policy(broker: RunningBroker) -> None:
    """One Cache-Control header, not the handler's and the middleware's side by side.

    The JWKS handler sets ``public, max-age=60`` and the envelope middleware appends
    ``no-store``: the response then carries two contradictory policies
    (``public, max-age=60, no-store`` once joined), so a cache that honours ``no-store``
    never caches the key set, and one that reads only the first header caches it.
    """
    resp = broker.get("/.well-known/jwks.json")
    assert resp.status_code == 200
    assert len(resp.headers.get_list("cache-control")) == 1, resp.headers.get_list("cache-control")
    for name in ("x-content-type-options", "x-frame-options"):
        assert resp.headers.get_list(name) == [SECURITY_HEADERS[name]]


def test_unsafe_request_id_is_replaced(broker: RunningBroker) -> None:
    resp = broker.get("/v1/health", headers={"X-Request-ID": "bad id with spaces"})
    assert_envelope(resp)
    resp = broker.get("/v1/health", headers={"X-Request-ID": "x" * 129})
    assert_envelope(resp)


def test_not_found_and_method_not_allowed_are_problems(broker: RunningBroker) -> None:
    assert_problem(broker.get("/v1/nope"), 404, "not_found")
    resp = broker.client.patch("/v1/token/renew")
    assert_problem(resp, 405, "method_not_allowed")
    assert "POST" in resp.headers["allow"]


def test_body_over_limit_is_413_with_content_length(broker: RunningBroker) -> None:
    resp = broker.post("/v1/register", content=b"x" * (MAX_BODY + 1))
    body = assert_problem(resp, 413, "payload_too_large")
    assert "1048576" in body["detail"] or "1 MB" in body["detail"]
    assert_envelope(resp)


def test_body_over_limit_is_413_when_chunked(broker: RunningBroker) -> None:
    def chunks() -> Iterator[bytes]:
        for _ in range(16):
            yield b" " * (MAX_BODY // 16)
        yield b" "

    # A generator body is sent with Transfer-Encoding: chunked and no Content-Length.
    request = broker.client.build_request("POST", "/v1/token/validate", content=chunks())
    assert "content-length" not in request.headers
    assert request.headers["transfer-encoding"] == "chunked"
    resp = broker.client.send(request)
    assert_problem(resp, 413, "payload_too_large", instance="/v1/token/validate")
    assert_envelope(resp)
    # The broker is still healthy afterwards.
    assert broker.get("/v1/health").status_code == 200


def test_body_over_limit_on_unknown_path(broker: RunningBroker) -> None:
    resp = broker.post("/v1/nowhere", content=b"y" * (MAX_BODY + 10))
    assert_problem(resp, 413, "payload_too_large")
    assert_envelope(resp)


@pytest.mark.parametrize("chunked", [False, True])
def test_body_of_exactly_the_limit_is_accepted(broker: RunningBroker, chunked: bool) -> None:
    payload = b'{"token":"not-a-jwt"}'
    body = payload + b" " * (MAX_BODY - len(payload))
    assert len(body) == MAX_BODY
    if chunked:
        content: bytes | Iterator[bytes] = iter([body[: MAX_BODY // 2], body[MAX_BODY // 2 :]])
    else:
        content = body
    resp = broker.post("/v1/token/validate", content=content)
    assert resp.status_code == 200, resp.text
    assert resp.json() == {"valid": False, "error": "token is invalid or expired"}
    assert_envelope(resp)


def test_success_is_json_and_errors_are_problem_json(broker: RunningBroker) -> None:
    ok = broker.get("/v1/challenge")
    assert ok.headers["content-type"] == "application/json"
    assert ok.content.endswith(b"\n")
    bad = broker.post("/v1/token/validate", content=b"[")
    assert bad.headers["content-type"] == "application/problem+json"
    assert_problem(bad, 400, "invalid_request")


def test_admin_auth_is_rate_limited(start_broker: Callable[..., RunningBroker]) -> None:
    limited = start_broker(
        env={"TASKLEASE_ADMIN_AUTH_BURST": "3", "TASKLEASE_ADMIN_AUTH_RATE": "0.05"}
    )
    statuses = []
    for _ in range(3):
        resp = limited.post("/v1/admin/auth", json={"secret": "wrong-secret-wrong-secret"})
        statuses.append(resp.status_code)
    assert statuses == [401, 401, 401]
    resp = limited.post("/v1/admin/auth", json={"secret": limited.admin_secret})
    body = assert_problem(resp, 429, "rate_limited")
    assert body["title"] == "Too Many Requests"
    assert int(resp.headers["retry-after"]) >= 1
    assert_envelope(resp)
    # Other endpoints are not throttled by the admin bucket.
    assert limited.get("/v1/challenge").status_code == 200


def test_app_auth_is_rate_limited(start_broker: Callable[..., RunningBroker]) -> None:
    limited = start_broker(env={"TASKLEASE_APP_AUTH_BURST": "2"})
    for _ in range(2):
        resp = limited.post("/v1/app/auth", json={"client_id": "nope", "client_secret": "x"})
        assert resp.status_code == 401
    resp = limited.post("/v1/app/auth", json={"client_id": "nope", "client_secret": "x"})
    assert_problem(resp, 429, "rate_limited")
    assert int(resp.headers["retry-after"]) >= 1
    assert_envelope(resp)


def test_a_request_id_shaped_like_a_credential_is_replaced(broker: RunningBroker) -> None:
    # Would fail if: a secret, a JWT or a by-reference token sent as X-Request-ID were
    # echoed, and so written to the access log and the audit log (TM-29).
    for pasted in ("ab" * 32, "eyJhbGciOiJFZERTQSJ9.e30.sig", "tlr_" + "x" * 40):
        resp = broker.get("/v1/health", headers={"X-Request-ID": pasted})
        assert resp.headers["x-request-id"] != pasted
        assert len(resp.headers["x-request-id"]) == 16
    kept = broker.get("/v1/health", headers={"X-Request-ID": "trace-42.a:b"})
    assert kept.headers["x-request-id"] == "trace-42.a:b"
