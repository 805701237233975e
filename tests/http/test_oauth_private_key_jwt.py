"""Apps at the token endpoint beyond the client secret: ``private_key_jwt`` client
authentication (RFC 7523 section 2.2) with a key registered through the admin API, and
DPoP-bound app tokens from client credentials (RFC 9449 section 5), against a real
broker over loopback HTTP; authlib's ``PrivateKeyJWT`` and the SDK's ``AppClient`` as
clients, and hand-made assertions (joserfc) for each refusal."""

from __future__ import annotations

import base64
import json
import re
import secrets
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import nacl.signing
import pytest
from e2e_support import SHARED_ENV, RunningBroker, free_port, jwt_parts

from tasklease.client import AppClient
from tasklease.client._holder import DPoPKey
from tasklease.rules import jws

pytest.importorskip("authlib")

from authlib.integrations.httpx_client import OAuth2Client  # noqa: E402
from authlib.oauth2.rfc7523 import PrivateKeyJWT  # noqa: E402
from joserfc import jwt as jose_jwt  # noqa: E402
from joserfc.jwk import OctKey, OKPKey  # noqa: E402

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
pytestmark = pytest.mark.filterwarnings("ignore::joserfc.errors.SecurityWarning")


@pytest.fixture(scope="module")
def issuer_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningBroker]:
    """A broker whose issuer is its URL (``public_url``), as standard clients want."""
    from e2e_support import launch_broker, stop_broker

    port = free_port()
    env = {**SHARED_ENV, "TASKLEASE_PUBLIC_URL": f"http://127.0.0.1:{port}"}
    running = launch_broker(tmp_path_factory.mktemp("pkjwt-broker"), env, port=port)
    yield running
    stop_broker(running)


def _jwk(key: OKPKey) -> str:
    return json.dumps(key.as_dict(private=False))


def _keyed_app(broker: RunningBroker, key: OKPKey) -> dict[str, Any]:
    body = {
        "name": f"kj-{secrets.token_hex(4)}",
        "scopes": ["read:data:*"],
        "public_key": _jwk(key),
    }
    created = broker.post("/v1/admin/apps", json=body, headers=broker.admin_headers())
    assert created.status_code == 201, created.text
    app: dict[str, Any] = created.json()
    return app


def _assertion(
    key: OKPKey | OctKey,
    client_id: str,
    aud: str | list[str],
    *,
    alg: str = "EdDSA",
    lifetime: int = 60,
    **overrides: Any,
) -> str:
    now = int(time.time())
    claims = {
        "iss": client_id,
        "sub": client_id,
        "aud": aud,
        "iat": now,
        "exp": now + lifetime,
        "jti": secrets.token_urlsafe(16),
        **overrides,
    }
    claims = {k: v for k, v in claims.items() if v is not None}
    return jose_jwt.encode({"alg": alg, "typ": "JWT"}, claims, key, algorithms=[alg])


def _token(
    broker: RunningBroker, assertion: str, headers: dict[str, str] | None = None
) -> httpx.Response:
    form = {
        "grant_type": "client_credentials",
        "client_assertion_type": ASSERTION_TYPE,
        "client_assertion": assertion,
    }
    return httpx.post(f"{broker.url}/v1/oauth/token", data=form, headers=headers or {}, timeout=10)


def _denied_once(broker: RunningBroker, answer: httpx.Response, reason: str) -> None:
    """401 invalid_client with a denial_id that leads to exactly one audit event, whose
    detail gives ``reason``."""
    assert answer.status_code == 401, answer.text
    body = answer.json()
    assert body["error"] == "invalid_client" and body["denial_id"].startswith("den_")
    events = broker.get(
        "/v1/audit/events",
        params={"event_type": "app_auth_failed", "outcome": "denied", "limit": 500},
        headers=broker.admin_headers(),
    ).json()["events"]
    hits = [e for e in events if e["detail"].endswith(f"denial={body['denial_id']}")]
    assert len(hits) == 1, (body, [e["detail"] for e in events][-5:])
    assert reason in hits[0]["detail"], hits[0]["detail"]


def test_metadata_advertises_private_key_jwt_and_its_algorithms(
    issuer_broker: RunningBroker,
) -> None:
    document = httpx.get(
        f"{issuer_broker.url}/.well-known/oauth-authorization-server", timeout=10
    ).json()
    assert "private_key_jwt" in document["token_endpoint_auth_methods_supported"]
    assert document["token_endpoint_auth_signing_alg_values_supported"] == ["EdDSA", "Ed25519"]


def test_authlib_private_key_jwt_gets_an_app_token(
    issuer_broker: RunningBroker, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AUTHLIB_INSECURE_TRANSPORT", "1")
    key = OKPKey.generate_key("Ed25519")
    app = _keyed_app(issuer_broker, key)
    assert app["public_key"] == key.as_dict()["x"]
    token_url = f"{issuer_broker.url}/v1/oauth/token"
    # authlib's assertions live an hour by default (ours may live 5 minutes at most), and
    # are for the token endpoint's URL: the broker takes its issuer only.
    claims = {"aud": issuer_broker.url, "exp": int(time.time()) + 120}
    auth = PrivateKeyJWT(token_url, alg="EdDSA", claims=claims)
    with OAuth2Client(app["client_id"], key, token_endpoint_auth_method=auth) as client:
        token = client.fetch_token(token_url, grant_type="client_credentials")
        assert token["token_type"] == "Bearer" and token["expires_in"] > 0
        launched = client.post(
            f"{issuer_broker.url}/v1/app/launch-tokens",
            json={"agent_name": "worker", "allowed_scope": ["read:data:1"]},
        )
    assert launched.status_code == 201, launched.text
    claims = jwt_parts(token["access_token"])[1]
    assert claims["client_id"] == app["client_id"] and claims["sub"] == f"app:{app['app_id']}"
    events = issuer_broker.get(
        "/v1/audit/events",
        params={"event_type": "app_authenticated", "limit": 500},
        headers=issuer_broker.admin_headers(),
    ).json()["events"]
    assert any(
        f"client_id={app['client_id']}" in e["detail"] and "method=private_key_jwt" in e["detail"]
        for e in events
    )


def test_refused_assertions_are_invalid_client_each_audited_once(
    issuer_broker: RunningBroker,
) -> None:
    key = OKPKey.generate_key("Ed25519")
    app = _keyed_app(issuer_broker, key)
    cid, url = app["client_id"], issuer_broker.url
    endpoint = f"{url}/v1/oauth/token"

    good = _assertion(key, cid, url)
    assert _token(issuer_broker, good).status_code == 200
    _denied_once(issuer_broker, _token(issuer_broker, good), "assertion_replayed")
    # The issuer is the one audience (draft-ietf-oauth-rfc7523bis): not the token
    # endpoint's URL, which another server's metadata could have named.
    _denied_once(issuer_broker, _token(issuer_broker, _assertion(key, cid, endpoint)), "aud is not")
    assert _token(issuer_broker, _assertion(key, cid, [url])).status_code == 200
    aud = url  # the assertions below are each refused for another reason

    expired = _assertion(key, cid, aud, iat=int(time.time()) - 120, exp=int(time.time()) - 1)
    _denied_once(issuer_broker, _token(issuer_broker, expired), "expired")
    long_lived = _assertion(key, cid, aud, lifetime=3600)
    _denied_once(issuer_broker, _token(issuer_broker, long_lived), "longer than 300")
    no_exp = _assertion(key, cid, aud, exp=None)
    _denied_once(issuer_broker, _token(issuer_broker, no_exp), "exp missing")
    no_jti = _assertion(key, cid, aud, jti=None)
    _denied_once(issuer_broker, _token(issuer_broker, no_jti), "jti missing")
    future = _assertion(key, cid, aud, nbf=int(time.time()) + 90)
    _denied_once(issuer_broker, _token(issuer_broker, future), "nbf is in the future")
    wrong_aud = _assertion(key, cid, "https://other.example/v1/oauth/token")
    _denied_once(issuer_broker, _token(issuer_broker, wrong_aud), "aud is not")
    other_sub = _assertion(key, cid, aud, sub="someone-else")
    _denied_once(issuer_broker, _token(issuer_broker, other_sub), "iss and sub")
    wrong_key = _assertion(OKPKey.generate_key("Ed25519"), cid, aud)
    _denied_once(issuer_broker, _token(issuer_broker, wrong_key), "bad signature")
    hs256 = _assertion(OctKey.import_key(secrets.token_bytes(32)), cid, aud, alg="HS256")
    _denied_once(issuer_broker, _token(issuer_broker, hs256), "alg not allowed")
    header, payload, _ = good.split(".")
    unsigned = jws.b64url_encode(b'{"alg":"none","typ":"JWT"}') + "." + payload + "."
    _denied_once(issuer_broker, _token(issuer_broker, unsigned), "empty segment")
    signed_none = jws.b64url_encode(b'{"alg":"none","typ":"JWT"}') + "." + payload + ".AA"
    _denied_once(issuer_broker, _token(issuer_broker, signed_none), "alg not allowed")
    embedded = jws.b64url_encode(
        json.dumps({"alg": "EdDSA", "jwk": key.as_dict(private=False)}).encode()
    )
    _denied_once(
        issuer_broker,
        _token(issuer_broker, f"{embedded}.{payload}.{good.split('.')[2]}"),
        "unexpected header parameter: jwk",
    )

    # An app without a key cannot use assertions at all; one with a secret and an
    # assertion at once authenticated twice.
    plain = issuer_broker.create_app(["read:data:*"])
    _denied_once(
        issuer_broker,
        _token(issuer_broker, _assertion(key, plain["client_id"], aud)),
        "no public key",
    )
    both = httpx.post(
        endpoint,
        data={
            "grant_type": "client_credentials",
            "client_assertion_type": ASSERTION_TYPE,
            "client_assertion": _assertion(key, cid, aud),
            "client_secret": app["client_secret"],
        },
        timeout=10,
    )
    assert both.status_code == 400 and both.json()["error"] == "invalid_request"
    wrong_type = httpx.post(
        endpoint,
        data={
            "grant_type": "client_credentials",
            "client_assertion_type": "urn:example:saml",
            "client_assertion": _assertion(key, cid, aud),
        },
        timeout=10,
    )
    assert wrong_type.status_code == 401 and wrong_type.json()["error"] == "invalid_client"


def test_an_assertion_asking_beyond_an_app_token_is_refused_and_not_spent(
    issuer_broker: RunningBroker,
) -> None:
    """A signed assertion that authenticates the app, with a scope the app token does not
    hold: invalid_scope with a denial_id leading to one app_auth_failed event naming the
    app; nothing was issued, so the assertion's jti is not spent."""
    key = OKPKey.generate_key("Ed25519")
    app = _keyed_app(issuer_broker, key)
    endpoint = f"{issuer_broker.url}/v1/oauth/token"
    assertion = _assertion(key, app["client_id"], issuer_broker.url)
    form = {
        "grant_type": "client_credentials",
        "client_assertion_type": ASSERTION_TYPE,
        "client_assertion": assertion,
    }
    answer = httpx.post(endpoint, data={**form, "scope": "admin:keys:*"}, timeout=10)
    assert answer.status_code == 400, answer.text
    body = answer.json()
    assert body["error"] == "invalid_scope" and body["denial_id"].startswith("den_")
    events = issuer_broker.get(
        "/v1/audit/events",
        params={"outcome": "denied", "limit": 500},
        headers=issuer_broker.admin_headers(),
    ).json()["events"]
    hits = [e for e in events if e["detail"].endswith(f"denial={body['denial_id']}")]
    assert len(hits) == 1 and hits[0]["event_type"] == "app_auth_failed", hits
    assert f"client_id={app['client_id']} app_id={app['app_id']}" in hits[0]["detail"]
    assert _token(issuer_broker, assertion).status_code == 200


def test_public_keys_through_the_admin_api(issuer_broker: RunningBroker) -> None:
    admin = issuer_broker.admin_headers()
    key = OKPKey.generate_key("Ed25519")
    app = issuer_broker.create_app(["read:data:*"])
    assert "public_key" not in app
    path = f"/v1/admin/apps/{app['app_id']}"
    raw = nacl.signing.SigningKey.generate()
    padded = base64.b64encode(bytes(raw.verify_key)).decode()
    updated = issuer_broker.client.put(path, json={"public_key": padded}, headers=admin)
    assert updated.status_code == 200, updated.text
    assert updated.json()["public_key"] == jws.b64url_encode(bytes(raw.verify_key))
    for bad in (
        json.dumps(key.as_dict(private=True)),  # a private JWK
        json.dumps({"kty": "RSA", "n": "AQAB", "e": "AQAB"}),
        "not a key at all, certainly not 32 bytes of one",
        base64.b64encode(bytes(31)).decode(),
    ):
        refused = issuer_broker.client.put(path, json={"public_key": bad}, headers=admin)
        assert refused.status_code == 400, (bad, refused.text)
    removed = issuer_broker.client.put(path, json={"public_key": ""}, headers=admin)
    assert removed.status_code == 200 and "public_key" not in removed.json()
    # A tenant's apps keep their own keys: acme's app is unknown at the default tenant.
    acme = issuer_broker.create_tenant(f"pk{secrets.token_hex(3)}")
    tenant_app = _keyed_app(acme, key)
    at_acme = _assertion(key, tenant_app["client_id"], acme.url)
    assert _token(acme, at_acme).status_code == 200
    elsewhere = _assertion(key, tenant_app["client_id"], issuer_broker.url)
    _denied_once(issuer_broker, _token(issuer_broker, elsewhere), "unknown_client_id")


def test_sdk_app_client_signs_in_with_its_private_key(issuer_broker: RunningBroker) -> None:
    signing = nacl.signing.SigningKey.generate()
    public = jws.b64url_encode(bytes(signing.verify_key))
    body = {"name": f"sdk-{secrets.token_hex(4)}", "scopes": ["read:data:*"], "public_key": public}
    app = issuer_broker.post("/v1/admin/apps", json=body, headers=issuer_broker.admin_headers())
    assert app.status_code == 201, app.text
    with AppClient(issuer_broker.url, app.json()["client_id"], private_key=signing) as client:
        launch = client.create_launch_token("worker", ["read:data:1"])
        assert launch["launch_token"]
        first = client.app_token()
        assert client.app_token(force=True) != first  # each sign-in a fresh assertion


def test_client_credentials_with_dpop_bind_the_app_token(issuer_broker: RunningBroker) -> None:
    app = issuer_broker.create_app(["read:data:*"])
    endpoint = f"{issuer_broker.url}/v1/oauth/token"
    key = DPoPKey()
    form = {
        "grant_type": "client_credentials",
        "client_id": app["client_id"],
        "client_secret": app["client_secret"],
    }
    proof = key.proof("POST", endpoint)
    answer = httpx.post(endpoint, data=form, headers={"DPoP": proof}, timeout=10)
    assert answer.status_code == 200, answer.text
    assert answer.json()["token_type"] == "DPoP"
    token = answer.json()["access_token"]
    assert jwt_parts(token)[1]["cnf"] == {"jkt": key.thumbprint}

    # The proof is single use at the token endpoint too.
    replayed = httpx.post(endpoint, data=form, headers={"DPoP": proof}, timeout=10)
    assert replayed.status_code == 400 and replayed.json()["error"] == "invalid_dpop_proof"
    assert replayed.json()["denial_id"].startswith("den_")
    wrong_uri = key.proof("POST", f"{issuer_broker.url}/v1/app/auth")
    refused = httpx.post(endpoint, data=form, headers={"DPoP": wrong_uri}, timeout=10)
    assert refused.status_code == 400 and refused.json()["error"] == "invalid_dpop_proof"

    # Where app tokens are used, the bound one needs its proof.
    launch_url = f"{issuer_broker.url}/v1/app/launch-tokens"
    body = {"agent_name": "worker", "allowed_scope": ["read:data:1"]}
    bearer = httpx.post(
        launch_url, json=body, headers={"Authorization": f"Bearer {token}"}, timeout=10
    )
    assert bearer.status_code == 401, bearer.text
    other = DPoPKey()
    stolen = httpx.post(
        launch_url,
        json=body,
        headers={"Authorization": f"DPoP {token}", "DPoP": other.proof("POST", launch_url, token)},
        timeout=10,
    )
    assert stolen.status_code == 401, stolen.text
    proven = httpx.post(
        launch_url,
        json=body,
        headers={"Authorization": f"DPoP {token}", "DPoP": key.proof("POST", launch_url, token)},
        timeout=10,
    )
    assert proven.status_code == 201, proven.text

    # The SDK's AppClient binds its app token the same way, with a private key too.
    signing = nacl.signing.SigningKey.generate()
    keyed = issuer_broker.post(
        "/v1/admin/apps",
        json={
            "name": f"dp-{secrets.token_hex(4)}",
            "scopes": ["read:data:*"],
            "public_key": jws.b64url_encode(bytes(signing.verify_key)),
        },
        headers=issuer_broker.admin_headers(),
    ).json()
    with AppClient(issuer_broker.url, keyed["client_id"], private_key=signing, dpop=True) as client:
        assert client.create_launch_token("worker", ["read:data:1"])["launch_token"]
        assert client.dpop is not None
        assert jwt_parts(client.app_token())[1]["cnf"] == {"jkt": client.dpop.thumbprint}


def _doc_snippets() -> list[str]:
    doc = Path(__file__).resolve().parents[2] / "docs" / "oauth.md"
    marker = (
        r"<!-- snippet: run by tests/http/test_oauth_private_key_jwt.py -->\n```python\n(.*?)```"
    )
    found = re.findall(marker, doc.read_text(encoding="utf-8"), re.S)
    assert len(found) == 2, "docs/oauth.md: the SDK and authlib private_key_jwt snippets"
    return found


def test_the_docs_snippets_run_as_written(
    issuer_broker: RunningBroker, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AUTHLIB_INSECURE_TRANSPORT", "1")
    sdk, with_authlib = _doc_snippets()
    signing_key = nacl.signing.SigningKey.generate()
    public = jws.b64url_encode(bytes(signing_key.verify_key))
    body = {
        "name": f"doc-{secrets.token_hex(4)}",
        "scopes": ["read:tickets:*"],
        "public_key": public,
    }
    app = issuer_broker.post("/v1/admin/apps", json=body, headers=issuer_broker.admin_headers())
    assert app.status_code == 201, app.text
    names: dict[str, Any] = {
        "broker_url": issuer_broker.url,
        "client_id": app.json()["client_id"],
        "signing_key": signing_key,
    }
    exec(compile(sdk, "docs/oauth.md", "exec"), names)  # noqa: S102 - the doc's own code
    assert names["launch"]["launch_token"]

    private_jwk = OKPKey.generate_key("Ed25519")
    keyed = _keyed_app(issuer_broker, private_jwk)
    names = {
        "broker_url": issuer_broker.url,
        "client_id": keyed["client_id"],
        "private_jwk": private_jwk,
    }
    exec(compile(with_authlib, "docs/oauth.md", "exec"), names)  # noqa: S102
    assert names["token"]["token_type"] == "Bearer"
    assert jwt_parts(names["token"]["access_token"])[1]["client_id"] == keyed["client_id"]
