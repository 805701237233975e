"""Numbers in the broker's answers are read within bounds (``bounds.lifetime``,
``bounds.number_within``): JSON integers are read exactly, so an ``expires_in`` of 400
digits is a Python int no float holds, and ``clock.now() + expires_in`` or
``float(expires_in)`` raised ``OverflowError`` out of the SDK instead of a
``TaskleaseError``. A lifetime that is no integer of 1 to ``MAX_EXPIRES_IN`` seconds (a
bool, zero, negative, absurd) is a ``bad_response``; a heartbeat's ``interval`` or
``deadline`` that is no number in range is read as absent."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from tasklease.bounds import MAX_EXPIRES_IN
from tasklease.client import AdminClient, Agent, AppClient, TaskleaseError

NONCE = "00" * 32
URL = "https://broker.example"
AGENT_ID = "spiffe://example.org/agent/o/t/1"
ABSURD = 10**400
BAD_LIFETIMES = [ABSURD, -ABSURD, MAX_EXPIRES_IN + 1, 0, -5, True, 1.5, float("nan")]


def repr_short(value: object) -> str:
    return repr(value)[:12]


def _answers(**by_path: Any) -> httpx.MockTransport:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/challenge":
            body: dict[str, Any] = {"nonce": NONCE, "expires_in": 30}
        else:
            body = by_path[request.url.path]
        # json.dumps writes NaN and a 400-digit integer as a broken broker would.
        return httpx.Response(
            200, content=json.dumps(body).encode(), headers={"content-type": "application/json"}
        )

    return httpx.MockTransport(handler)


def _register(expires_in: object, **more: Any) -> Agent:
    registered = {"agent_id": AGENT_ID, "access_token": "a.b.c", "expires_in": expires_in}
    transport = _answers(**{"/v1/register": registered}, **more)
    return Agent.register(URL, "f" * 64, "o", "t", ["read:x:*"], transport=transport)


@pytest.mark.parametrize("expires_in", BAD_LIFETIMES, ids=repr_short)
def test_a_registration_lifetime_out_of_range_is_a_bad_response(expires_in: object) -> None:
    with pytest.raises(TaskleaseError) as refused:
        _register(expires_in)
    assert refused.value.code == "bad_response"


def test_a_registration_lifetime_in_range_is_kept() -> None:
    agent = _register(MAX_EXPIRES_IN)
    try:
        assert agent.token == "a.b.c"
    finally:
        agent.close()


@pytest.mark.parametrize("expires_in", [ABSURD, True], ids=repr_short)
def test_an_app_token_lifetime_out_of_range_is_a_bad_response(expires_in: object) -> None:
    transport = _answers(**{"/v1/oauth/token": {"access_token": "t", "expires_in": expires_in}})
    with (
        AppClient(URL, "app", "secret", transport=transport) as app,
        pytest.raises(TaskleaseError) as refused,
    ):
        app.app_token()
    assert refused.value.code == "bad_response"


@pytest.mark.parametrize("expires_in", [ABSURD, -ABSURD, float("nan")], ids=repr_short)
def test_an_admin_sign_in_lifetime_out_of_range_is_read_as_absent(expires_in: object) -> None:
    transport = _answers(
        **{
            "/v1/admin/auth": {"access_token": "t", "expires_in": expires_in},
            "/v1/admin/apps": {"apps": []},
        }
    )
    with AdminClient(URL, "secret", transport=transport) as admin:
        assert admin.list_apps() == []
        assert admin.sign_in()["access_token"] == "t"


@pytest.mark.parametrize(
    ("answer", "interval", "deadline"),
    [
        ({"interval": ABSURD, "deadline": ABSURD}, 30.0, 0.0),
        ({"interval": float("nan"), "deadline": float("inf")}, 30.0, 0.0),
        ({"interval": 0, "deadline": -1}, 30.0, 0.0),
        ({"interval": True, "deadline": True}, 30.0, 0.0),
        ({"interval": 15, "deadline": 1_700_000_000.5}, 15.0, 1_700_000_000.5),
    ],
)
def test_a_heartbeat_answer_out_of_range_is_read_as_absent(
    answer: dict[str, Any], interval: float, deadline: float
) -> None:
    agent = _register(300, **{"/v1/heartbeat": {"status": "ok", **answer}})
    try:
        status = agent.heartbeat()
    finally:
        agent.close()
    assert (status.interval, status.deadline) == (interval, deadline)
    assert type(status.interval) is float and type(status.deadline) is float


def test_heartbeat_defaults_are_those_of_an_answer_without_them() -> None:
    agent = _register(300, **{"/v1/heartbeat": {"status": "ok"}})
    try:
        status = agent.heartbeat()
    finally:
        agent.close()
    assert (status.interval, status.deadline) == (30.0, 0.0)
