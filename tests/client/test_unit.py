"""Transport-injection unit tests: error mapping, the wire rules, the public surface."""

from __future__ import annotations

import base64
import json

import httpx
import nacl.signing
import pytest

import tasklease.client
from tasklease.client import (
    AdminClient,
    Agent,
    Conflict,
    InsufficientScope,
    InternalError,
    InvalidTTL,
    RateLimited,
    RenewalCeilingExceeded,
    RenewalLimitReached,
    TaskleaseError,
    Unavailable,
)

NONCE = "ab" * 32


def problem(status: int, code: str, **extra: object) -> httpx.Response:
    body = {
        "type": f"urn:tasklease:error:{code}",
        "status": status,
        "detail": f"{code} detail",
        "error_code": code,
        "request_id": "req-1",
        **extra,
    }
    return httpx.Response(status, json=body, headers={"content-type": "application/problem+json"})


def test_register_signs_the_hex_decoded_nonce() -> None:
    key = nacl.signing.SigningKey.generate()
    sent: dict[str, object] = {}

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/challenge":
            return httpx.Response(200, json={"nonce": NONCE, "expires_in": 30})
        sent.update(json.loads(request.content))
        return httpx.Response(
            200,
            json={
                "agent_id": "spiffe://x/agent/o/t/1",
                "access_token": "a.b.c",
                "expires_in": 300,
                "token_type": "Bearer",
            },
        )

    agent = Agent.register(
        "https://broker.example",
        "f" * 64,
        "o",
        "t",
        ["read:x:*"],
        key=key,
        transport=httpx.MockTransport(handler),
    )
    assert agent.token == "a.b.c" and agent.agent_id == "spiffe://x/agent/o/t/1"
    assert base64.b64decode(str(sent["public_key"])) == bytes(key.verify_key)
    key.verify_key.verify(bytes.fromhex(NONCE), base64.b64decode(str(sent["signature"])))
    assert sent["requested_scope"] == ["read:x:*"]
    agent.close()


@pytest.mark.parametrize(
    ("response", "cls", "code"),
    [
        (problem(403, "insufficient_scope"), InsufficientScope, "insufficient_scope"),
        (
            problem(403, "renewal_ceiling_exceeded"),
            RenewalCeilingExceeded,
            "renewal_ceiling_exceeded",
        ),
        (problem(400, "invalid_ttl"), InvalidTTL, "invalid_ttl"),
        (problem(409, "conflict"), Conflict, "conflict"),
        (problem(503, "service_unavailable"), Unavailable, "service_unavailable"),
        (problem(413, "payload_too_large"), tasklease.client.PayloadTooLarge, "payload_too_large"),
        (httpx.Response(502, text="<html>bad gateway</html>"), InternalError, "internal_error"),
        (httpx.Response(418, text="teapot"), TaskleaseError, "http_418"),
    ],
)
def test_errors_mirror_codes(response: httpx.Response, cls: type, code: str) -> None:
    admin = AdminClient(
        "https://broker.example", None, transport=httpx.MockTransport(lambda _r: response)
    )
    with pytest.raises(cls) as info:
        admin.health()
    assert type(info.value) is cls
    assert info.value.code == code
    assert info.value.status == response.status_code
    admin.close()


def test_rate_limited_carries_retry_after() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        response = problem(429, "rate_limited", hint="slow down")
        response.headers["Retry-After"] = "7"
        return response

    admin = AdminClient("https://broker.example", "secret", transport=httpx.MockTransport(handler))
    with pytest.raises(RateLimited) as info:
        admin.list_apps()
    assert info.value.retry_after == 7
    assert info.value.hint == "slow down" and info.value.request_id == "req-1"
    admin.close()


def test_renewal_limits_share_a_base() -> None:
    assert issubclass(tasklease.client.RenewalCountExceeded, RenewalLimitReached)
    assert issubclass(RenewalCeilingExceeded, RenewalLimitReached)
    assert issubclass(RenewalLimitReached, tasklease.client.Forbidden)
    assert issubclass(tasklease.client.TransportError, TaskleaseError)


def test_exported_members() -> None:
    """The public surface is exactly what we meant (httpx tests/test_exported_members.py)."""
    assert set(tasklease.client.__all__) == {
        "AdminClient",
        "Agent",
        "AppClient",
        "AsyncAgent",
        "AsyncDelegatedToken",
        "AuthenticatedPeer",
        "AuthorizationServer",
        "ClientClosed",
        "Clock",
        "Conflict",
        "CredentialExpired",
        "DelegatedToken",
        "Forbidden",
        "Handshake",
        "HeartbeatStatus",
        "InsecureHTTP",
        "InsufficientScope",
        "InternalError",
        "InvalidClient",
        "InvalidDPoPProof",
        "InvalidRequest",
        "InvalidScope",
        "InvalidTTL",
        "InvalidTarget",
        "MethodNotAllowed",
        "NotFound",
        "OfflineCredential",
        "OfflinePeerAuth",
        "OfflineReporter",
        "PayloadTooLarge",
        "Peer",
        "PeerAuthenticationFailed",
        "ProtectedResource",
        "RateLimited",
        "RenewalCeilingExceeded",
        "RenewalCountExceeded",
        "RenewalLimitReached",
        "ResourceToken",
        "Retry",
        "ScopeViolation",
        "TaskleaseError",
        "TransportError",
        "Unauthorized",
        "Unavailable",
        "UnsupportedGrantType",
        "UseDPoPNonce",
        "adiscover",
        "discover",
    }
    exported = {n for n in dir(tasklease.client) if not n.startswith("_")}
    assert exported - set(tasklease.client.__all__) <= {"annotations", "testing"}
    for name in tasklease.client.__all__:
        assert getattr(tasklease.client, name).__module__ == "tasklease.client", name


@pytest.mark.parametrize(
    ("named", "accepted"),
    [
        ("https://tools.example/mcp", True),  # the URL called
        ("https://tools.example", True),  # its origin
        ("https://tools.example/", True),
        ("https://tools.example.evil.net", False),  # a look-alike host: text prefix only
        ("https://tools.example.evil.net/", False),
        ("https://tools.example/mc", False),  # a path prefix not at a segment
        ("http://tools.example/mcp", False),  # another scheme
        ("https://tools.example:8443/mcp", False),  # another port
        ("https://tools.example/mcp?x=1", False),
    ],
)
def test_discovery_takes_only_a_resource_that_encloses_the_url_called(
    named: str, accepted: bool
) -> None:
    """RFC 9728 section 3.3: the metadata a ``WWW-Authenticate`` answer points to must be
    for the resource called. Only its own origin, or origin and path at a ``/``, is."""
    from tasklease.client import TaskleaseError, discover

    called = "https://tools.example/mcp"
    if "evil" in named:  # the attacker serves a document naming the victim it imitates
        called, named = named.rstrip("/") + "/mcp", "https://tools.example"

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.startswith("/.well-known/oauth-protected-resource"):
            servers = ["https://broker.example"]
            return httpx.Response(200, json={"resource": named, "authorization_servers": servers})
        meta = {"issuer": "https://broker.example", "token_endpoint": "https://broker.example/t"}
        return httpx.Response(200, json=meta)

    origin = called.split("/mcp")[0]
    metadata_url = f"{origin}/.well-known/oauth-protected-resource/mcp"
    transport = httpx.MockTransport(handler)
    if accepted:
        found = discover(called, metadata_url=metadata_url, transport=transport)
        assert found.resource == named
    else:
        with pytest.raises(TaskleaseError) as caught:
            discover(called, metadata_url=metadata_url, transport=transport)
        assert caught.value.code == "bad_metadata"


def test_discovery_asks_a_few_authorization_servers_and_only_over_https() -> None:
    # Would fail if: a resource's document (whoever serves it) could send the SDK to as
    # many hosts as it names, over plain HTTP among them, or name a token endpoint over
    # plain HTTP, where credentials would follow.
    from tasklease.client import discover
    from tasklease.client._oauth import MAX_AUTHORIZATION_SERVERS

    asked: list[str] = []
    named = ["http://plain.example"] + [f"https://as{i}.example" for i in range(10)]

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.startswith("/.well-known/oauth-protected-resource"):
            body = {"resource": "https://tools.example/mcp", "authorization_servers": named}
            return httpx.Response(200, json=body)
        asked.append(f"{request.url.scheme}://{request.url.host}")
        issuer = f"https://{request.url.host}"
        plain = request.url.host == "as0.example"
        endpoint = f"{'http' if plain else 'https'}://{request.url.host}/token"
        return httpx.Response(200, json={"issuer": issuer, "token_endpoint": endpoint})

    found = discover(
        "https://tools.example/mcp",
        metadata_url="https://tools.example/.well-known/oauth-protected-resource/mcp",
        transport=httpx.MockTransport(handler),
    )
    assert asked == [f"https://as{i}.example" for i in range(MAX_AUTHORIZATION_SERVERS)]
    assert [s.issuer for s in found.authorization_servers] == asked[1:]  # as0's is plain


# Would fail if: the SDK hex-decoded whatever answered /v1/challenge and signed it with the
# agent's key: a party on the path (a plain-HTTP hop, a proxy) could have any bytes signed
# (a chain block, another protocol's message) and replay the signature as the agent's.
@pytest.mark.parametrize(
    "nonce",
    [
        "",  # the empty message
        "ab" * 31,
        "ab" * 33,
        "7b22" + "ab" * 200,  # any bytes at all, as long as they are hex
        "AB" * 32,  # the broker's nonces are lowercase
        " " + "ab" * 32,
        "ab" * 31 + "a ",
    ],
    ids=["empty", "short", "long", "arbitrary", "uppercase", "space", "trailing-space"],
)
@pytest.mark.parametrize("operation", ["register", "resume"])
def test_a_challenge_nonce_other_than_32_bytes_is_never_signed(nonce: str, operation: str) -> None:
    key = nacl.signing.SigningKey.generate()
    posted: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/challenge":
            return httpx.Response(200, json={"nonce": nonce, "expires_in": 30})
        posted.append(request.url.path)
        return httpx.Response(500)

    transport = httpx.MockTransport(handler)
    with pytest.raises(TaskleaseError) as refused:
        if operation == "register":
            Agent.register(
                "https://broker.example",
                "f" * 64,
                "o",
                "t",
                ["read:x:*"],
                key=key,
                transport=transport,
            )
        else:
            Agent.resume(
                "https://broker.example", "spiffe://x/agent/o/t/1", key, transport=transport
            )
    assert refused.value.code == "bad_response"
    assert "64 lowercase hex characters" in str(refused.value)
    assert posted == []  # nothing signed went out
