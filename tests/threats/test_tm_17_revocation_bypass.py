# Would fail if: validation stopped consulting the revocation index, a revocation level
# stopped matching what it names (or its delegations), or the index were not rebuilt from
# the store when the broker starts.
"""TM-17 — revocation bypass: a credential the operator (or its holder) ended keeps
working — through another path, through what it delegated, through a new token of the
same agent, or after the broker restarts and forgets its in-memory index.

Every level (`token`, `agent`, `task`, `chain`) and a release end what they name and
what was delegated from it, on every path that takes a token; a revoked agent gets no
new token by renewal, resumption or delegation; revocations are durable.
"""

from __future__ import annotations

from typing import Any

import pytest
from e2e_support import RunningBroker, jwt_parts, launch_broker, stop_broker
from threat_support import bearer, refused, resume_body

pytestmark = pytest.mark.slow

SCOPE = ["read:tickets:*"]


def _delegated(broker: RunningBroker, parent: str, to: Any) -> str:
    resp = broker.delegate(parent, to.agent_id, ["read:tickets:1"])
    assert resp.status_code == 200, resp.text
    return str(resp.json()["access_token"])


def _dead(broker: RunningBroker, token: str) -> None:
    refused(
        broker,
        broker.post("/v1/token/renew", headers=bearer(token)),
        401,
        "unauthorized",
        "revoked",
    )
    assert not broker.is_valid(token)


def _revoke(broker: RunningBroker, level: str, target: str) -> None:
    resp = broker.revoke(level, target)
    assert resp.status_code == 200, resp.text
    assert resp.json()["revoked"] is True


def test_token_level_ends_the_token_and_its_delegations(broker: RunningBroker) -> None:
    holder, helper, bystander = (broker.register(SCOPE) for _ in range(3))
    child = _delegated(broker, holder.access_token, helper)
    _revoke(broker, "token", jwt_parts(holder.access_token)[1]["jti"])
    _dead(broker, holder.access_token)
    _dead(broker, child)
    assert broker.is_valid(bystander.access_token)


def test_agent_level_ends_every_token_of_the_agent_and_below(broker: RunningBroker) -> None:
    root, middle, leaf = (broker.register(SCOPE) for _ in range(3))
    hop = _delegated(broker, root.access_token, middle)
    below = broker.delegate(hop, leaf.agent_id, ["read:tickets:1"])
    assert below.status_code == 200, below.text
    renewed = broker.post("/v1/token/renew", headers=root.bearer).json()["access_token"]
    _revoke(broker, "agent", root.agent_id)
    for token in (renewed, hop, below.json()["access_token"]):
        _dead(broker, token)
    assert broker.is_valid(middle.access_token)  # the helpers' own tokens are theirs


def test_task_and_chain_levels(broker: RunningBroker) -> None:
    first = broker.register(SCOPE, task_id="task-incident")
    second = broker.register(SCOPE, task_id="task-incident")
    other = broker.register(SCOPE, task_id="task-other")
    _revoke(broker, "task", "task-incident")
    _dead(broker, first.access_token)
    _dead(broker, second.access_token)
    assert broker.is_valid(other.access_token)
    # Chain: everything the agent handed on ends; the agent's own token lives on.
    root, helper = broker.register(SCOPE), broker.register(SCOPE)
    child = _delegated(broker, root.access_token, helper)
    _revoke(broker, "chain", root.agent_id)
    _dead(broker, child)
    assert broker.is_valid(root.access_token)


def test_a_released_token_and_its_delegations_are_dead(broker: RunningBroker) -> None:
    holder, helper = broker.register(SCOPE), broker.register(SCOPE)
    child = _delegated(broker, holder.access_token, helper)
    released = broker.post("/v1/token/release", headers=holder.bearer)
    assert released.status_code == 204, released.text
    _dead(broker, holder.access_token)
    _dead(broker, child)


def test_a_revoked_agent_gets_no_new_token_by_any_path(broker: RunningBroker) -> None:
    agent, helper = broker.register(SCOPE), broker.register(SCOPE)
    _revoke(broker, "agent", agent.agent_id)
    _dead(broker, agent.access_token)
    resp = broker.delegate(agent.access_token, helper.agent_id, ["read:tickets:1"])
    refused(broker, resp, 401, "unauthorized", "revoked")
    resumed = broker.post("/v1/resume", json=resume_body(broker, agent.agent_id, agent.key))
    refused(broker, resumed, 403, "forbidden")
    # ...and nobody can delegate *to* it either: it is no longer an active agent.
    resp = broker.delegate(helper.access_token, agent.agent_id, ["read:tickets:1"])
    refused(broker, resp, 404, "not_found")


def test_a_by_reference_token_is_revoked_like_any_other(broker: RunningBroker) -> None:
    # Enough scopes to pass the 4 KB threshold: the token is issued as an opaque handle.
    wide = [f"read:tickets:{'t' * 90}{i:02d}" for i in range(50)]
    agent = broker.register(wide)
    assert agent.access_token.startswith("tlr_")
    jti = broker.validate(agent.access_token)["claims"]["jti"]
    _revoke(broker, "token", jti)
    _dead(broker, agent.access_token)


def test_revocations_survive_a_restart(broker: RunningBroker) -> None:
    agent, kept = broker.register(SCOPE), broker.register(SCOPE)
    _revoke(broker, "agent", agent.agent_id)
    stop_broker(broker)
    again = launch_broker(broker.data_dir)
    try:
        assert not again.is_valid(agent.access_token)
        assert again.is_valid(kept.access_token)
        resp = again.post("/v1/token/renew", headers=agent.bearer)
        assert resp.status_code == 401, resp.text
    finally:
        stop_broker(again)
