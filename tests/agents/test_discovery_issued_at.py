"""A discovery statement's ``issued_at`` is compared with the clock, never subtracted from
it: a JSON integer no float holds is outside the clock skew, refused 401 with a
``denial_id`` and one ``discovery_bind_denied`` event, not an internal error."""

from __future__ import annotations

import pytest
from agents_support import Env, b64

from tasklease.core.discovery import statement


@pytest.mark.parametrize("issued_at", ["1" + "0" * 400, "-1" + "0" * 400, "2" * 320])
def test_an_issued_at_no_float_holds_is_refused_not_a_crash(env: Env, issued_at: str) -> None:
    a = env.register("task-a")
    signature = b64(a.key.sign(statement(a.agent_id, "https://a.example/", 0)).signature)
    body = f'{{"endpoint":"https://a.example/","issued_at":{issued_at},"signature":"{signature}"}}'
    answer = env.http.post(
        "/v1/discovery/bind",
        headers={**a.auth(), "Content-Type": "application/json"},
        content=body,
    )
    assert answer.status_code == 401, answer.text
    assert answer.json()["denial_id"]
    denied = env.audit("discovery_bind_denied", "denied")
    assert len(denied) == 1 and "outside the clock skew" in denied[0].detail


def test_an_issued_at_within_the_skew_still_binds(env: Env) -> None:
    a = env.register("task-a")
    now = int(env.clock.now())
    for issued_at in (now - env.broker.config.clock_skew, now + env.broker.config.clock_skew):
        signed = a.key.sign(statement(a.agent_id, "https://a.example/", issued_at)).signature
        answer = env.http.post(
            "/v1/discovery/bind",
            headers=a.auth(),
            json={
                "endpoint": "https://a.example/",
                "issued_at": issued_at,
                "signature": b64(signed),
            },
        )
        assert answer.status_code == 200, answer.text
