# Would fail if: a registration's token carried the launch token's whole resource list
# (or the broker's default audience) instead of the one resource it named, or audience
# checks accepted a token whose `aud` does not name the checking resource.
"""TM-39 — a token valid at more resources than the one it was minted for: a resource
server (or an MCP server) that receives an agent's token replays it at another resource
the same agent could reach (audience confusion, the "confused deputy" of token passing).

A launch token lists the resources its agents may ask for; a registration names one and
its token's ``aud`` is exactly that one (RFC 8707). Every audience check — the broker's
``/v1/token/validate`` and introspection, and the offline verifier a resource server
runs — refuses a token minted for another resource, and delegation never widens it.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from e2e_support import RunningBroker, jwt_parts
from threat_support import refused

from tasklease.verify import AppCredentials, VerificationError, Verifier

pytestmark = pytest.mark.slow

FILES = "https://files.example/mcp"
MAIL = "https://mail.example/mcp"
SCOPE = ["read:docs:*"]


def _register(broker: RunningBroker, launch: str, **named: str) -> dict[str, Any]:
    body, _ = broker.register_body(launch, SCOPE)
    resp = broker.post("/v1/register", json={**body, **named})
    assert resp.status_code == 200, resp.text
    return dict(resp.json())


def _valid_at(broker: RunningBroker, token: str, audience: str | None) -> bool:
    body = {"token": token} if audience is None else {"token": token, "audience": audience}
    resp = broker.post("/v1/token/validate", json=body)
    assert resp.status_code == 200, resp.text
    return bool(resp.json()["valid"])


@pytest.fixture(scope="module")
def files_token(broker: RunningBroker) -> str:
    launch = broker.launch_token(SCOPE, resource=[FILES, MAIL], single_use=False)
    return str(_register(broker, launch, resource=FILES)["access_token"])


@pytest.fixture(scope="module")
def verifiers(broker: RunningBroker) -> Iterator[dict[str, Verifier]]:
    app = broker.create_app(SCOPE)
    credentials = AppCredentials(app["client_id"], app["client_secret"])
    running = {
        aud: Verifier(broker.url, audience=aud, credentials=credentials) for aud in (FILES, MAIL)
    }
    for verifier in running.values():
        verifier.start()
    yield running
    for verifier in running.values():
        verifier.close()


def test_the_token_names_only_the_resource_it_was_minted_for(files_token: str) -> None:
    assert jwt_parts(files_token)[1]["aud"] == [FILES]


def test_the_broker_refuses_it_at_any_other_resource(
    broker: RunningBroker, files_token: str
) -> None:
    assert _valid_at(broker, files_token, FILES)
    assert not _valid_at(broker, files_token, MAIL)
    assert not _valid_at(broker, files_token, None)  # not a token for the broker's default audience
    assert not _valid_at(broker, files_token, FILES + "/")  # exact match, not a prefix
    assert not _valid_at(broker, files_token, "https://files.example")


def test_introspection_for_another_resource_says_inactive(
    broker: RunningBroker, files_token: str
) -> None:
    def introspect(audience: str) -> dict[str, Any]:
        resp = broker.post(
            "/v1/introspect",
            json={"token": files_token, "audience": audience},
            headers=broker.admin_headers(),
        )
        assert resp.status_code == 200, resp.text
        return dict(resp.json())

    assert introspect(FILES)["active"] is True
    assert introspect(MAIL) == {"active": False}


def test_the_offline_verifier_of_another_resource_refuses_it(
    files_token: str, verifiers: dict[str, Verifier]
) -> None:
    assert verifiers[FILES].verify(files_token).sub
    with pytest.raises(VerificationError):
        verifiers[MAIL].verify(files_token)


def test_a_default_audience_token_is_not_a_resource_token(
    broker: RunningBroker, verifiers: dict[str, Verifier]
) -> None:
    plain = broker.register(SCOPE)
    assert jwt_parts(plain.access_token)[1]["aud"] == ["tasklease"]
    assert not _valid_at(broker, plain.access_token, FILES)
    with pytest.raises(VerificationError):
        verifiers[FILES].verify(plain.access_token)


def test_a_registration_cannot_pick_a_resource_outside_its_launch_token(
    broker: RunningBroker,
) -> None:
    launch = broker.launch_token(SCOPE, resource=[FILES, MAIL])
    for named, reason in (
        ({"resource": "https://payments.example/mcp"}, "resource"),
        ({}, "resource"),  # two allowed: the registration must choose, it does not get both
    ):
        body, _ = broker.register_body(launch, SCOPE)
        resp = broker.post("/v1/register", json={**body, **named})
        refused(broker, resp, 400, "invalid_target", reason)
    body, _ = broker.register_body(launch, SCOPE)
    both = broker.post("/v1/register", json={**body, "resource": FILES, "audience": MAIL})
    assert both.status_code == 400 and both.json()["error_code"] == "invalid_target", both.text
    assert _register(broker, launch, audience=MAIL)["access_token"]  # nothing was consumed


def test_a_delegation_cannot_move_the_token_to_another_resource(
    broker: RunningBroker, files_token: str
) -> None:
    helper = broker.register(SCOPE)
    resp = broker.delegate(files_token, helper.agent_id, ["read:docs:1"], resource=MAIL)
    refused(broker, resp, 400, "invalid_target", "audience would widen")
    kept = broker.delegate(files_token, helper.agent_id, ["read:docs:1"])
    assert kept.status_code == 200, kept.text
    delegated = kept.json()["access_token"]
    assert jwt_parts(delegated)[1]["aud"] == [FILES]
    assert not _valid_at(broker, delegated, MAIL)
