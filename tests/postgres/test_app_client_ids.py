"""A client id no app can have, at the token endpoint on PostgreSQL: refused as an
unknown client (401 ``invalid_client``, a ``denial_id``, one ``app_auth_failed`` event),
as on SQLite and in memory, never looked up.

The edge refuses control characters in the body, but two ways carry a client id past it:
the percent-encoded parts of an ``Authorization: Basic`` header (RFC 6749 section 2.3.1)
and the ``iss`` inside a ``private_key_jwt`` assertion (base64url). A NUL there reached
the store, whose driver refuses NUL in text: the answer was 400 ``invalid_request`` with
no ``denial_id`` and no audit event, a failed sign-in the audit log never saw.
"""

from __future__ import annotations

import base64
import json

import httpx
import pytest
from e2e_support import RunningBroker

from tasklease.rules import jws

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"


def _assertion(iss: str) -> str:
    header = jws.b64url_encode(json.dumps({"alg": "EdDSA", "typ": "JWT"}).encode())
    claims = jws.b64url_encode(json.dumps({"iss": iss, "sub": iss, "jti": "j"}).encode())
    return f"{header}.{claims}.{jws.b64url_encode(b'x' * 64)}"


def _basic(raw: bytes) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(raw).decode()}


CASES = {
    "basic_nul": ({"grant_type": "client_credentials"}, _basic(b"ab%00cd:secret")),
    "basic_escape": ({"grant_type": "client_credentials"}, _basic(b"ab%1b[2Jcd:secret")),
    "basic_c1": ({"grant_type": "client_credentials"}, _basic(b"ab%C2%9Bcd:secret")),
    "assertion_nul": (
        {
            "grant_type": "client_credentials",
            "client_assertion_type": ASSERTION_TYPE,
            "client_assertion": _assertion("ab\u0000cd"),
        },
        {},
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_client_id_with_a_control_character_is_an_unknown_client(
    one_replica: RunningBroker, case: str
) -> None:
    broker = one_replica  # shared by the cases: each finds its refusal by its denial_id
    form, headers = CASES[case]
    answer = httpx.post(f"{broker.url}/v1/oauth/token", data=form, headers=headers, timeout=10)
    assert answer.status_code == 401, answer.text
    body = answer.json()
    assert body["error"] == "invalid_client", body
    denial = body["denial_id"]
    events = broker.get(
        "/v1/audit/events",
        params={"event_type": "app_auth_failed", "limit": 50},
        headers=broker.admin_headers(),
    ).json()["events"]
    hits = [e for e in events if e["detail"].endswith(f"denial={denial}")]
    assert len(hits) == 1, [e["detail"] for e in events]
    assert "client_id=<unknown> reason=unknown_client_id" in hits[0]["detail"]
