"""An app that signs in just after its key was changed: a key change revokes the app's
tokens up to and including ``clock_skew`` past its second (so that it also ends a token
that a replica whose clock runs ahead signed in before it: decision 142), so a token
issued until then would be born revoked. The sign-in is answered 503 with ``Retry-After``
saying until when (audited once), and the sign-in then gets a token that works."""

from __future__ import annotations

import json
import secrets
from typing import Any

from agents_support import Env, b64
from nacl.signing import SigningKey

from tasklease.rules import jws

ASSERTION = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"


def _sign_in(env: Env, key: SigningKey, client_id: str) -> Any:
    return env.http.post("/v1/oauth/token", data=_form(env, key, client_id))


def _form(env: Env, key: SigningKey, client_id: str) -> dict[str, str]:
    """A client-credentials request with a fresh ``private_key_jwt`` assertion."""
    now = int(env.clock.now())
    header = jws.b64url_encode(json.dumps({"alg": "EdDSA", "typ": "JWT"}).encode())
    claims = {
        "iss": client_id,
        "sub": client_id,
        "aud": env.broker.config.issuer,
        "exp": now + 60,
        "iat": now,
        "jti": secrets.token_hex(8),
    }
    body = jws.b64url_encode(json.dumps(claims).encode())
    signature = jws.b64url_encode(key.sign(f"{header}.{body}".encode()).signature)
    return {
        "grant_type": "client_credentials",
        "client_assertion_type": ASSERTION,
        "client_assertion": f"{header}.{body}.{signature}",
    }


def _works(env: Env, token: str) -> bool:
    answer = env.http.post(
        "/v1/app/launch-tokens",
        headers={"Authorization": f"Bearer {token}"},
        json={"agent_name": "x", "allowed_scope": ["read:data:*"]},
    )
    return bool(answer.status_code == 201)


def test_a_sign_in_just_after_a_key_change_is_asked_to_come_back(env: Env) -> None:
    admin = {"Authorization": f"Bearer {env.admin_token()}"}
    old, new = SigningKey.generate(), SigningKey.generate()
    made = env.http.post(
        "/v1/admin/apps",
        headers=admin,
        json={
            "name": "rekeyed",
            "scopes": ["read:data:*"],
            "public_key": b64(bytes(old.verify_key)),
        },
    )
    assert made.status_code == 201, made.text
    app_id, client_id = made.json()["app_id"], made.json()["client_id"]
    first = _sign_in(env, old, client_id)
    assert first.status_code == 200, first.text
    env.clock.advance(5.1)
    changed = env.http.put(
        f"/v1/admin/apps/{app_id}", headers=admin, json={"public_key": b64(bytes(new.verify_key))}
    )
    assert changed.status_code == 200, changed.text
    assert not _works(env, first.json()["access_token"])  # the old key's token ended

    skew = env.broker.config.clock_skew
    env.clock.advance(0.5)  # the same whole second as the change
    form = _form(env, new, client_id)
    refused = env.http.post("/v1/oauth/token", data=form)
    assert refused.status_code == 503, refused.text
    assert refused.headers["retry-after"] == str(skew + 1)
    assert f"sign in again in {skew + 1} s" in refused.json()["detail"]
    denial = refused.json()["denial_id"]
    events = [e for e in env.audit("app_auth_failed", "denied") if e.detail.endswith(denial)]
    assert len(events) == 1 and "credential_changed_moments_ago" in events[0].detail

    # Nothing was spent: the same assertion, sent again when asked (as a client retrying
    # after a 503 may do; the SDK signs a fresh one), signs in.
    env.clock.advance(skew + 1)
    again = env.http.post("/v1/oauth/token", data=form)
    assert again.status_code == 200, again.text
    assert _works(env, again.json()["access_token"])
