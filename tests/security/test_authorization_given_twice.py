"""``Authorization`` given twice is refused at the edge, on every route.

It is a singleton field (RFC 9110 section 11.6.2: one set of credentials; RFC 6749
section 2.3: a client uses one authentication method per request). The broker read the
first field and ignored the rest, so ``POST /v1/oauth/token`` with two ``Basic`` fields
signed in the first client and said nothing of the second, while a proxy, a log or a
policy engine that reads the last field saw another client than the broker did. The
verifier's middleware already refuses several fields as one malformed value
(``verify.asgi``); the broker now does too: 400 ``invalid_request``, before any route
runs, whatever the fields hold.
"""

from __future__ import annotations

import base64

import httpx
import pytest
from e2e_support import RunningBroker


def _basic(client_id: str, secret: str) -> str:
    return "Basic " + base64.b64encode(f"{client_id}:{secret}".encode()).decode()


def _refused(answer: httpx.Response) -> None:
    assert answer.status_code == 400, answer.text
    assert answer.json()["error_code"] == "invalid_request", answer.text
    assert "Authorization" in answer.json()["detail"]


@pytest.mark.parametrize("same", [False, True])
def test_client_credentials_with_two_basic_fields_are_refused(
    broker: RunningBroker, same: bool
) -> None:
    app = broker.create_app(["read:data:*"])
    other = app if same else broker.create_app(["read:data:*"])
    fields = [
        ("Authorization", _basic(app["client_id"], app["client_secret"])),
        ("Authorization", _basic(other["client_id"], other["client_secret"])),
    ]
    answer = httpx.post(
        f"{broker.url}/v1/oauth/token",
        data={"grant_type": "client_credentials"},
        headers=fields,
        timeout=10,
    )
    _refused(answer)
    # One field still signs in.
    alone = httpx.post(
        f"{broker.url}/v1/oauth/token",
        data={"grant_type": "client_credentials"},
        headers=fields[:1],
        timeout=10,
    )
    assert alone.status_code == 200, alone.text


def test_two_bearer_fields_are_refused_on_an_authenticated_route(broker: RunningBroker) -> None:
    app = broker.create_app(["read:data:*"])
    token = broker.app_token(app)
    fields = [("Authorization", f"Bearer {token}"), ("Authorization", "Bearer x")]
    answer = httpx.post(
        f"{broker.url}/v1/introspect", data={"token": token}, headers=fields, timeout=10
    )
    _refused(answer)
    answer = httpx.get(f"{broker.url}/v1/app/agents", headers=fields, timeout=10)
    _refused(answer)
