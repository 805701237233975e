# Would fail if: the renewal count stopped being carried on the lineage (for example
# resumption or delegation started again from `rnc = 0`), or renewal stopped comparing it
# with `max_renewals`.
"""TM-16 — renewal abuse: a stolen or runaway agent keeps its credential alive for ever by
renewing it, forks it into two live tokens, or launders its spent renewal budget through
a resumption or a delegation.

A renewal revokes the token it replaces (of two racing renewals exactly one wins), keeps
the scope, and counts against a budget kept on the lineage (``max_renewals``); no token of
a registration lives past registration + ``renewal_ceiling``, whatever path made it.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import httpx
import pytest
from e2e_support import RunningBroker, jwt_parts
from threat_support import bearer, refused, resume_body

pytestmark = pytest.mark.slow

MAX_RENEWALS = 2
CEILING = 3
BROKER_ENV = {
    "TASKLEASE_MAX_RENEWALS": str(MAX_RENEWALS),
    "TASKLEASE_RENEWAL_CEILING": str(CEILING),
}
SCOPE = ["read:tickets:4711"]


@pytest.fixture(scope="module")
def early(broker: RunningBroker) -> tuple[Any, str]:
    """An agent registered first, so its lifetime ceiling passes while the others run,
    and its token renewed at once (within the ceiling however long the others take)."""
    agent = broker.register(SCOPE)
    return agent, _renewed(broker, agent.access_token)


def _renew(broker: RunningBroker, token: str) -> httpx.Response:
    return broker.post("/v1/token/renew", headers=bearer(token))


def _renewed(broker: RunningBroker, token: str) -> str:
    resp = _renew(broker, token)
    assert resp.status_code == 200, resp.text
    return str(resp.json()["access_token"])


def test_the_renewal_budget_is_capped(broker: RunningBroker, early: tuple[Any, str]) -> None:
    agent = broker.register(SCOPE)
    token = agent.access_token
    for count in range(1, MAX_RENEWALS + 1):
        token = _renewed(broker, token)
        claims = jwt_parts(token)[1]
        assert claims["rnc"] == count and claims["scope"].split(" ") == SCOPE
    refused(broker, _renew(broker, token), 403, "renewal_count_exceeded", "renewal count")
    assert broker.is_valid(token)  # the refusal ends nothing; the last token runs out


def test_a_renewed_token_is_dead_and_cannot_fork(broker: RunningBroker) -> None:
    agent = broker.register(SCOPE)
    successor = _renewed(broker, agent.access_token)
    refused(broker, _renew(broker, agent.access_token), 401, "unauthorized", "revoked")
    assert not broker.is_valid(agent.access_token)
    # Two holders of one token race to renew it: one successor, not two.
    answers: list[httpx.Response] = []
    start = threading.Barrier(6)

    def attempt() -> None:
        with httpx.Client(base_url=broker.url, timeout=15) as client:
            start.wait()
            answers.append(client.post("/v1/token/renew", headers=bearer(successor)))

    threads = [threading.Thread(target=attempt) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert [a.status_code for a in answers].count(200) == 1, [a.text for a in answers]
    for loser in (a for a in answers if a.status_code != 200):
        # Revoked by the winner, or refused because the lineage's count already moved on.
        code = "unauthorized" if loser.status_code == 401 else "renewal_count_exceeded"
        refused(broker, loser, loser.status_code, code)


def test_resumption_continues_the_count(broker: RunningBroker) -> None:
    agent = broker.register(SCOPE)
    token = agent.access_token
    for _ in range(MAX_RENEWALS):
        token = _renewed(broker, token)
    resp = broker.post("/v1/resume", json=resume_body(broker, agent.agent_id, agent.key))
    refused(broker, resp, 403, "renewal_count_exceeded")


def test_delegation_hands_on_the_spent_budget(broker: RunningBroker) -> None:
    spent = broker.register(SCOPE)
    helper = broker.register(SCOPE)
    token = spent.access_token
    for _ in range(MAX_RENEWALS):
        token = _renewed(broker, token)
    delegated = broker.delegate(token, helper.agent_id, SCOPE)
    assert delegated.status_code == 200, delegated.text
    laundered = delegated.json()["access_token"]
    assert jwt_parts(laundered)[1]["rnc"] == MAX_RENEWALS
    refused(broker, _renew(broker, laundered), 403, "renewal_count_exceeded")


def test_nothing_outlives_the_registration_ceiling(
    broker: RunningBroker, early: tuple[Any, str]
) -> None:
    agent, renewed_token = early
    first = jwt_parts(agent.access_token)[1]
    ceiling = first["oiat"] + CEILING
    assert first["exp"] <= ceiling  # the default lifetime (300 s) is cut to the ceiling
    renewed = jwt_parts(renewed_token)[1]
    assert renewed["exp"] <= ceiling and renewed["oiat"] == first["oiat"]
    time.sleep(max(0.0, ceiling - time.time()) + 0.2)
    resp = broker.post("/v1/resume", json=resume_body(broker, agent.agent_id, agent.key))
    refused(broker, resp, 403, "renewal_ceiling_exceeded", "ceiling")
