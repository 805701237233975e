"""Standard OAuth clients work: RFC 8414 metadata per tenant, client credentials for apps
and token exchange for agents at ``POST /v1/oauth/token``, driven by ``authlib``'s OAuth 2
client against a real broker whose issuer is its URL (``public_url``)."""

from __future__ import annotations

import base64
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import quote_plus, urlsplit

import httpx
import pytest
from e2e_support import SHARED_ENV, RunningBroker, free_port, jwt_parts

pytest.importorskip("authlib")

from authlib.integrations.httpx_client import OAuth2Client  # noqa: E402
from authlib.oauth2.rfc8414 import AuthorizationServerMetadata  # noqa: E402

EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"
ACCESS_TOKEN = "urn:ietf:params:oauth:token-type:access_token"


def well_known(issuer: str, suffix: str = "oauth-authorization-server") -> str:
    """RFC 8414 section 3.1: the well-known path goes between the host and the issuer's
    path (a trailing ``/`` removed first)."""
    parts = urlsplit(issuer)
    return f"{parts.scheme}://{parts.netloc}/.well-known/{suffix}{parts.path.rstrip('/')}"


@pytest.fixture(scope="module")
def issuer_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningBroker]:
    """A broker whose issuer is the URL clients reach it at (RFC 8414 section 3.3)."""
    from e2e_support import launch_broker, stop_broker

    port = free_port()
    env = {**SHARED_ENV, "TASKLEASE_PUBLIC_URL": f"http://127.0.0.1:{port}"}
    running = launch_broker(tmp_path_factory.mktemp("oauth-broker"), env, port=port)
    yield running
    stop_broker(running)


def _metadata(url: str) -> dict[str, Any]:
    answer = httpx.get(url, timeout=10)
    assert answer.status_code == 200, (url, answer.text)
    assert answer.headers["content-type"].startswith("application/json")
    document: dict[str, Any] = answer.json()
    return document


def test_metadata_names_each_tenants_issuer_where_rfc_8414_clients_look(
    issuer_broker: RunningBroker, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AUTHLIB_INSECURE_TRANSPORT", "1")  # loopback http in the test
    url = issuer_broker.url
    root = _metadata(well_known(url))
    assert root["issuer"] == url
    assert root["token_endpoint"] == f"{url}/v1/oauth/token"
    assert root["jwks_uri"] == f"{url}/.well-known/jwks.json"
    assert root["introspection_endpoint"] == f"{url}/v1/introspect"
    assert root["revocation_endpoint"] == f"{url}/v1/token/revoke"
    assert root["grant_types_supported"] == ["client_credentials", EXCHANGE]
    assert root["token_endpoint_auth_methods_supported"] == [
        "client_secret_basic",
        "client_secret_post",
        "private_key_jwt",
        "none",
    ]
    assert root["dpop_signing_alg_values_supported"] == ["EdDSA"]
    assert "authorization_endpoint" not in root  # no grant here goes through a browser
    assert root["authorization_details_types_supported"] == ["scope", "resource_access"]
    AuthorizationServerMetadata(root).validate()  # authlib's RFC 8414 checks
    assert _metadata(well_known(url, "openid-configuration")) == root

    # A tenant: issuer <root issuer>/t/acme, found by path insertion (section 3.1) and
    # under its own base path; and its tokens carry that issuer.
    acme = issuer_broker.create_tenant("acme")
    tenant_issuer = f"{url}/t/acme"
    inserted = _metadata(well_known(tenant_issuer))
    assert inserted["issuer"] == tenant_issuer
    assert inserted["token_endpoint"] == f"{tenant_issuer}/v1/oauth/token"
    assert inserted["jwks_uri"] == f"{tenant_issuer}/.well-known/jwks.json"
    AuthorizationServerMetadata(inserted).validate()
    assert _metadata(f"{tenant_issuer}/.well-known/oauth-authorization-server") == inserted
    assert _metadata(well_known(tenant_issuer, "openid-configuration")) == inserted
    assert jwt_parts(acme.admin_token())[1]["iss"] == tenant_issuer
    for missing in ("nobody", "default"):
        gone = httpx.get(well_known(f"{url}/t/{missing}"), timeout=10)
        assert gone.status_code == 404, gone.text


def test_metadata_without_a_url_issuer_uses_the_origin_of_the_request(
    broker: RunningBroker,
) -> None:
    document = _metadata(f"{broker.url}/.well-known/oauth-authorization-server")
    assert document["issuer"] == "tasklease"  # the configured iss, whatever it is
    assert document["token_endpoint"] == f"{broker.url}/v1/oauth/token"
    # Never the Host header: a forged one does not move the endpoints elsewhere.
    forged = httpx.get(
        f"{broker.url}/.well-known/oauth-authorization-server",
        headers={"Host": "evil.example"},
        timeout=10,
    ).json()
    assert forged["token_endpoint"] == f"{broker.url}/v1/oauth/token"


@pytest.fixture
def app(issuer_broker: RunningBroker) -> dict[str, Any]:
    return issuer_broker.create_app(["read:data:*"])


@pytest.mark.parametrize("method", ["client_secret_basic", "client_secret_post"])
def test_authlib_client_credentials_gets_an_app_token_that_launches_agents(
    issuer_broker: RunningBroker, app: dict[str, Any], method: str
) -> None:
    token_url = f"{issuer_broker.url}/v1/oauth/token"
    with OAuth2Client(
        app["client_id"], app["client_secret"], token_endpoint_auth_method=method
    ) as client:
        token = client.fetch_token(token_url, grant_type="client_credentials")
        assert token["token_type"] == "Bearer" and token["expires_in"] > 0
        assert set(token["scope"].split()) >= {"app:launch-tokens:*"}
        assert "refresh_token" not in token  # RFC 6749 section 4.4.3
        launched = client.post(
            f"{issuer_broker.url}/v1/app/launch-tokens",
            json={"agent_name": "worker", "allowed_scope": ["read:data:1"]},
        )
    assert launched.status_code == 201, launched.text
    claims = jwt_parts(token["access_token"])[1]
    assert claims["iss"] == issuer_broker.url and claims["client_id"] == app["client_id"]


def _post(broker: RunningBroker, data: dict[str, str], **kwargs: Any) -> httpx.Response:
    return httpx.post(f"{broker.url}/v1/oauth/token", data=data, timeout=10, **kwargs)


def _basic(client_id: str, secret: str) -> dict[str, str]:
    raw = f"{quote_plus(client_id)}:{quote_plus(secret)}".encode()
    return {"Authorization": "Basic " + base64.b64encode(raw).decode()}


def test_client_credentials_refusals_are_rfc_6749_errors(
    issuer_broker: RunningBroker, app: dict[str, Any]
) -> None:
    cc = {"grant_type": "client_credentials"}
    good = _basic(app["client_id"], app["client_secret"])

    wrong = _post(issuer_broker, cc, headers=_basic(app["client_id"], "not-the-secret"))
    assert wrong.status_code == 401
    assert wrong.json()["error"] == "invalid_client" and wrong.json()["denial_id"]
    assert wrong.headers["www-authenticate"].startswith("Basic ")
    posted = {**cc, "client_id": app["client_id"], "client_secret": "nope"}
    in_body = _post(issuer_broker, posted)
    assert in_body.status_code == 401 and in_body.json()["error"] == "invalid_client"
    assert in_body.headers["www-authenticate"].startswith("Bearer ")
    nothing = _post(issuer_broker, cc)
    assert nothing.status_code == 401 and nothing.json()["error"] == "invalid_client"
    garbled = _post(issuer_broker, cc, headers={"Authorization": "Basic !!"})
    assert garbled.status_code == 401 and garbled.json()["error"] == "invalid_client"
    assertion = {
        **cc,
        "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
        "client_assertion": "a.b.c",
    }
    assert _post(issuer_broker, assertion).json()["error"] == "invalid_client"  # unparsable
    both = _post(issuer_broker, {**cc, "client_secret": app["client_secret"]}, headers=good)
    assert both.status_code == 400 and both.json()["error"] == "invalid_request"
    scope = _post(issuer_broker, {**cc, "scope": "read:data:1"}, headers=good)
    assert scope.status_code == 400 and scope.json()["error"] == "invalid_scope"
    target = _post(issuer_broker, {**cc, "resource": "https://other.example/"}, headers=good)
    assert target.status_code == 400 and target.json()["error"] == "invalid_target"
    # A DPoP proof binds the app token (tests/http/test_oauth_private_key_jwt.py); a
    # malformed one is refused, never answered with an unbound token.
    dpop = _post(issuer_broker, cc, headers={**good, "DPoP": "x.y.z"})
    assert dpop.status_code == 400 and dpop.json()["error"] == "invalid_dpop_proof"
    grant = _post(issuer_broker, {"grant_type": "password"}, headers=good)
    assert grant.status_code == 400 and grant.json()["error"] == "unsupported_grant_type"
    ok = _post(issuer_broker, {**cc, "scope": "app:launch-tokens:*"}, headers=good)
    assert ok.status_code == 200, ok.text
    assert ok.headers["cache-control"] == "no-store"


def test_client_credentials_share_the_app_sign_in_rate_limit(
    start_broker: Callable[..., RunningBroker],
) -> None:
    running = start_broker(env={"TASKLEASE_APP_AUTH_BURST": "2", "TASKLEASE_APP_AUTH_RATE": "0.01"})
    app = running.create_app(["read:data:*"])
    creds = {"client_id": app["client_id"], "client_secret": app["client_secret"]}
    assert running.post("/v1/app/auth", json=creds).status_code == 200
    cc = {"grant_type": "client_credentials", **creds}
    assert _post(running, cc).status_code == 200
    limited = _post(running, cc)
    assert limited.status_code == 429 and int(limited.headers["retry-after"]) >= 1
    assert running.post("/v1/app/auth", json=creds).status_code == 429


_CREDENTIAL_REFUSALS = [
    pytest.param({"client_id": "{cid}"}, {}, "no_client_secret", id="no-secret"),
    pytest.param({"client_id": "{cid}", "client_secret": ""}, {}, "no_client_secret", id="empty"),
    pytest.param({"client_secret": "a-guess"}, {}, "no_client_id", id="no-client-id"),
    pytest.param({}, {}, "no_client_credentials", id="nothing"),
    pytest.param({}, {"Authorization": "Basic !!"}, "malformed_basic", id="garbled-basic"),
    pytest.param({}, {"Authorization": "Basic Y2lk"}, "malformed_basic", id="basic-no-colon"),
    # Bytes that are not ASCII: an internal error before (base64 refuses non-ASCII text).
    pytest.param({}, {"Authorization": b"Basic \xe9t\xe9"}, "malformed_basic", id="basic-latin1"),
    pytest.param({}, {"Authorization": "Digest abc"}, "authorization_not_basic", id="digest"),
    pytest.param({}, "basic:{cid}:", "no_client_secret", id="basic-empty-secret"),
    pytest.param({}, "basic::a-guess", "no_client_id", id="basic-empty-client-id"),
    pytest.param(
        {"client_id": "{cid}", "client_assertion": "a.b.c", "client_assertion_type": "urn:x"},
        {},
        "client_assertion_type_not_jwt_bearer",
        id="assertion-type",
    ),
]


@pytest.mark.parametrize(("form", "headers", "reason"), _CREDENTIAL_REFUSALS)
def test_client_credentials_that_do_not_authenticate_are_audited_once(
    issuer_broker: RunningBroker,
    app: dict[str, Any],
    form: dict[str, str],
    headers: dict[str, str] | str,
    reason: str,
) -> None:
    """However a client fails to authenticate, before or after an app is found, the answer
    is the one generic 401 invalid_client with a denial_id naming exactly one
    app_auth_failed event that holds the precise reason (as a wrong secret's does)."""
    cid = app["client_id"]
    if isinstance(headers, str):  # "basic:<id>:<secret>" with {cid} for the app's id
        _, client_id, secret = headers.format(cid=cid).split(":")
        raw = base64.b64encode(f"{client_id}:{secret}".encode()).decode()
        headers = {"Authorization": "Basic " + raw}
    data = {"grant_type": "client_credentials"}
    data.update({k: v.format(cid=cid) for k, v in form.items()})
    answer = _post(issuer_broker, data, headers=headers)
    assert answer.status_code == 401, answer.text
    body = answer.json()
    assert body["error"] == "invalid_client" and body["denial_id"].startswith("den_")
    assert body["detail"] == "Authentication failed"  # the wrong secret's, word for word
    basic_tried = "Authorization" in headers
    assert answer.headers["www-authenticate"].startswith("Basic " if basic_tried else "Bearer ")
    events = issuer_broker.get(
        "/v1/audit/events",
        params={"event_type": "app_auth_failed", "outcome": "denied", "limit": 500},
        headers=issuer_broker.admin_headers(),
    ).json()["events"]
    hits = [e for e in events if e["detail"].endswith(f"denial={body['denial_id']}")]
    assert len(hits) == 1, [e["detail"] for e in events][-5:]
    assert f"reason={reason}" in hits[0]["detail"], hits[0]["detail"]


def _denials(broker: RunningBroker, denial_id: str) -> list[dict[str, Any]]:
    """The audit events, of any type, that a refusal's ``denial_id`` leads to."""
    events = broker.get(
        "/v1/audit/events",
        params={"outcome": "denied", "limit": 500},
        headers=broker.admin_headers(),
    ).json()["events"]
    return [e for e in events if e["detail"].endswith(f"denial={denial_id}")]


_BEYOND_AN_APP_TOKEN = [
    pytest.param(
        {"scope": "app:agents:* admin:keys:*"},
        "invalid_scope",
        "scope_beyond_app_token: admin:keys:*",
        id="admin-scope",
    ),
    pytest.param(
        {"scope": "read:data:1"}, "invalid_scope", "scope_beyond_app_token", id="app-ceiling"
    ),
    pytest.param(
        {"resource": "https://other.example/"},
        "invalid_target",
        "resource_not_this_broker: https://other.example/",
        id="resource",
    ),
    pytest.param(
        {"audience": "billing"}, "invalid_target", "resource_not_this_broker", id="audience"
    ),
]


@pytest.mark.parametrize(("asked", "error", "reason"), _BEYOND_AN_APP_TOKEN)
def test_client_credentials_beyond_an_app_token_are_refused_with_one_audit_event(
    issuer_broker: RunningBroker,
    app: dict[str, Any],
    asked: dict[str, str],
    error: str,
    reason: str,
) -> None:
    """An app that authenticates but asks for a scope its app token does not hold, or a
    resource other than the broker, is refused with RFC 6749's or RFC 8707's error and a
    denial_id leading to exactly one app_auth_failed event that names the app."""
    good = _basic(app["client_id"], app["client_secret"])
    answer = _post(issuer_broker, {"grant_type": "client_credentials", **asked}, headers=good)
    assert answer.status_code == 400, answer.text
    body = answer.json()
    assert body["error"] == error and body["denial_id"].startswith("den_")
    assert "access_token" not in body
    hits = _denials(issuer_broker, body["denial_id"])
    assert len(hits) == 1, hits
    assert hits[0]["event_type"] == "app_auth_failed"
    detail = hits[0]["detail"]
    assert f"client_id={app['client_id']} app_id={app['app_id']}" in detail, detail
    assert f"reason={reason}" in detail, detail


def test_client_credentials_authenticate_before_scope_and_resource_are_weighed(
    issuer_broker: RunningBroker, app: dict[str, Any]
) -> None:
    """A wrong secret asking for too much is a client that does not authenticate: 401
    invalid_client for the wrong secret, never a hint about what it asked for."""
    beyond = {
        "grant_type": "client_credentials",
        "scope": "admin:keys:*",
        "resource": "https://other.example/",
    }
    wrong = _post(issuer_broker, beyond, headers=_basic(app["client_id"], "not-the-secret"))
    assert wrong.status_code == 401, wrong.text
    body = wrong.json()
    assert body["error"] == "invalid_client" and body["detail"] == "Authentication failed"
    hits = _denials(issuer_broker, body["denial_id"])
    assert len(hits) == 1 and "reason=wrong_secret" in hits[0]["detail"], hits


def test_client_credentials_that_do_not_authenticate_spend_the_sign_in_rate_limit(
    start_broker: Callable[..., RunningBroker],
) -> None:
    """Each such refusal is an audit write, so it costs what a wrong secret costs: a
    client sending no credentials is limited like one guessing secrets, on both doors."""
    running = start_broker(env={"TASKLEASE_APP_AUTH_BURST": "2", "TASKLEASE_APP_AUTH_RATE": "0.01"})
    app = running.create_app(["read:data:*"])
    cc = {"grant_type": "client_credentials"}
    assert _post(running, cc).status_code == 401
    assert _post(running, cc, headers={"Authorization": "Digest abc"}).status_code == 401
    limited = _post(running, cc)
    assert limited.status_code == 429 and int(limited.headers["retry-after"]) >= 1
    creds = {"client_id": app["client_id"], "client_secret": app["client_secret"]}
    assert running.post("/v1/app/auth", json=creds).status_code == 429


def test_authlib_token_exchange_narrows_an_agent_token_to_one_resource(
    issuer_broker: RunningBroker,
) -> None:
    agent = issuer_broker.register(
        ["read:data:1", "read:data:2"], resource=["https://orders.example/api"]
    )
    with OAuth2Client(None, token_endpoint_auth_method="none") as client:
        token = client.fetch_token(
            f"{issuer_broker.url}/v1/oauth/token",
            grant_type=EXCHANGE,
            subject_token=agent.access_token,
            subject_token_type=ACCESS_TOKEN,
            resource="https://orders.example/api",
            scope="read:data:1",
        )
    assert token["issued_token_type"] == ACCESS_TOKEN and token["scope"] == "read:data:1"
    claims = jwt_parts(token["access_token"])[1]
    assert claims["aud"] == ["https://orders.example/api"] or claims["aud"] == (
        "https://orders.example/api"
    )
    assert claims["sub"] == agent.agent_id and claims["iss"] == issuer_broker.url


def test_token_exchange_refuses_client_credentials_it_would_not_check(
    issuer_broker: RunningBroker,
) -> None:
    """Token exchange authenticates no client (the subject token is the credential). A
    Basic header, a client secret or a client assertion sent with it used to be ignored:
    a wrong secret was answered 200, as if it had been checked (RFC 6749 section 2.3 has
    a server check the credentials it is given). They are refused, with nothing issued."""
    agent = issuer_broker.register(["read:data:1"], resource=["https://orders.example/api"])
    form = {
        "grant_type": EXCHANGE,
        "subject_token": agent.access_token,
        "subject_token_type": ACCESS_TOKEN,
        "resource": "https://orders.example/api",
    }
    assertion = {"client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"}
    for extra, headers in (
        ({}, _basic("some-client", "not-its-secret")),
        ({"client_id": "some-client", "client_secret": "not-its-secret"}, {}),
        ({**assertion, "client_assertion": "x.y.z"}, {}),
    ):
        answer = _post(issuer_broker, {**form, **extra}, headers=headers)
        assert answer.status_code == 400, answer.text
        assert answer.json()["error"] == "invalid_request"
        assert "no client authentication" in answer.json()["error_description"]
    # The same exchange without them (a client_id alone names a public client) is made.
    answer = _post(issuer_broker, {**form, "client_id": "some-client"})
    assert answer.status_code == 200, answer.text
