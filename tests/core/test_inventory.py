"""What operators see (core.inventory): agents with the kernel's standing, pages,
delegation trees from the audit log, tasks, revocation previews; and two operator
fixes: a removed app is not removed twice, a revocation's audit event names its target."""

from __future__ import annotations

import base64
from typing import Any

import pytest

from tasklease.core.errors import Conflict, InvalidRequest, NotFound
from tasklease.core.exchange import ACCESS_TOKEN_TYPE, GRANT_TYPE, ExchangeRequest
from tasklease.core.inventory import decode_cursor, encode_cursor, token_of
from tasklease.core.records import AuditEvent
from tasklease.core.store import AuditQuery


def _events(broker: Any, **filters: Any) -> list[Any]:
    return broker.store.query_audit(AuditQuery(limit=1000, **filters))[0]


@pytest.fixture
def fleet(broker: Any, kit: Any) -> list[Any]:
    """Three agents of task-a and one of task-b; the first delegates to the second, which
    delegates on to the third."""
    launch = kit.launch(broker, ["read:data:*"], single_use=False, ttl=600)
    agents = [kit.register(broker, launch, task_id="task-a") for _ in range(3)]
    agents.append(kit.register(broker, launch, task_id="task-b"))
    return agents


def _delegate(broker: Any, kit: Any, claims: Any, to: Any) -> Any:
    return broker.delegate(claims, delegate_to=to.sub, scope=["read:data:1"], ttl=None, ctx=kit.ctx)


def test_agents_pages_newest_first_with_state(broker: Any, kit: Any, fleet: list[Any]) -> None:
    inventory = broker.inventory
    first = inventory.agents(limit=3)
    assert len(first.items) == 3 and first.next_cursor
    rest = inventory.agents(limit=3, cursor=first.next_cursor)
    assert len(rest.items) == 1 and rest.next_cursor == ""
    listed = [v.agent.agent_id for v in first.items + rest.items]
    assert sorted(listed) == sorted(a.sub for a in fleet)
    assert {v.state for v in first.items + rest.items} == {"active"}
    assert all(v.session is not None and v.renewals_used == 0 for v in first.items)

    broker.revoke(kit.admin(broker).claims, level="task", target="task-a", ctx=kit.ctx)
    states = {v.agent.agent_id: (v.state, v.reason) for v in inventory.agents(limit=10).items}
    assert states[fleet[0].sub] == ("revoked", "agent revoked at level task")
    assert states[fleet[3].sub] == ("active", "")
    revoked = inventory.agents(state="revoked", limit=10).items
    assert {v.agent.agent_id for v in revoked} == {a.sub for a in fleet[:3]}
    assert [v.agent.agent_id for v in inventory.agents(task_id="task-b").items] == [fleet[3].sub]
    with pytest.raises(InvalidRequest):
        inventory.agents(state="nope")
    with pytest.raises(InvalidRequest):
        inventory.agents(cursor="not a cursor")


def test_cursor_round_trip_and_refusal() -> None:
    assert decode_cursor(encode_cursor((12.5, "x"))) == (12.5, "x")
    assert decode_cursor(None) is None
    for bad in ("e30", "WzEsMl0", "!!", encode_cursor((1.0, "a"))[:-2] + "zz"):
        with pytest.raises(InvalidRequest):
            decode_cursor(bad)


@pytest.mark.parametrize("number", ["1" + "0" * 400, "-1" + "0" * 400, "NaN", "Infinity"])
def test_a_cursor_number_no_float_holds_is_malformed(number: str) -> None:
    # A cursor is caller text read exactly: an integer of 400 digits made the finiteness
    # check overflow (a 500 on the listing routes) instead of a 400.
    raw = f'[{number},"x"]'.encode()
    cursor = base64.urlsafe_b64encode(raw).rstrip(b"=").decode()
    with pytest.raises(InvalidRequest, match="cursor is malformed"):
        decode_cursor(cursor)


def test_delegation_tree_chain_and_states(broker: Any, kit: Any, fleet: list[Any]) -> None:
    a, b, c = fleet[:3]
    hop1 = _delegate(broker, kit, a.claims, b)
    hop2 = _delegate(broker, kit, hop1.claims, c)
    view = broker.inventory.delegations(hop2.claims.jti)
    assert [n.jti for n in view.chain] == [a.claims.jti, hop1.claims.jti]
    assert view.token.operation == "delegate" and view.token.delegator == b.sub
    assert view.token.scope == "read:data:1" and view.token.expires_at
    assert view.root_agent == a.sub and view.principal == "admin"

    root = broker.inventory.delegations(a.claims.jti).token
    assert [child.jti for child in root.children] == [hop1.claims.jti]
    assert [g.jti for g in root.children[0].children] == [hop2.claims.jti]
    assert root.state == "active"

    broker.revoke(kit.admin(broker).claims, level="token", target=hop1.claims.jti, ctx=kit.ctx)
    root = broker.inventory.delegations(a.claims.jti).token
    assert root.state == "active"
    assert root.children[0].state == "revoked"
    assert root.children[0].children[0].state == "revoked"  # its descendant dies with it

    with pytest.raises(NotFound):
        broker.inventory.delegations("0" * 32)
    with pytest.raises(InvalidRequest):
        broker.inventory.delegations("not-a-jti")


def test_task_view_and_revocation_preview(broker: Any, kit: Any, fleet: list[Any]) -> None:
    a, b = fleet[:2]
    _delegate(broker, kit, a.claims, b)
    task = broker.inventory.task("task-a")
    assert {v.agent.agent_id for v in task.agents} == {x.sub for x in fleet[:3]}
    assert len(task.trees) == 3 and task.events and task.events_total >= len(task.events)
    preview = broker.inventory.preview("task", "task-a")
    assert {v.agent.agent_id for v in preview.agents} == {x.sub for x in fleet[:3]}
    assert len(preview.tokens) == 4
    agent_preview = broker.inventory.preview("agent", a.sub)
    assert {v.agent.agent_id for v in agent_preview.agents} == {a.sub, b.sub}
    broker.revoke(kit.admin(broker).claims, level="task", target="task-a", ctx=kit.ctx)
    assert broker.inventory.preview("task", "task-a").agents == []
    task = broker.inventory.task("task-a")
    assert [(r.level, r.target) for r in task.revocations] == [("task", "task-a")]
    with pytest.raises(NotFound):
        broker.inventory.task("no-such-task")


def test_revocation_events_name_their_target(broker: Any, kit: Any, fleet: list[Any]) -> None:
    admin = kit.admin(broker).claims
    broker.revoke(admin, level="task", target="task-b", ctx=kit.ctx)
    broker.revoke(admin, level="agent", target=fleet[0].sub, ctx=kit.ctx)
    broker.revoke(admin, level="token", target=fleet[1].claims.jti, ctx=kit.ctx)
    task_b = _events(broker, task_id="task-b", event_type="token_revoked")
    assert [e.detail.split(" by=")[0] for e in task_b] == ["revoked at level=task target=task-b"]
    agent = _events(broker, agent_id=fleet[0].sub, event_type="token_revoked")
    assert len(agent) == 1 and agent[0].task_id == "task-a"
    token = [e for e in _events(broker, event_type="token_revoked") if "level=token" in e.detail]
    assert token[0].agent_id == "" and fleet[1].claims.jti in token[0].detail


def test_a_removed_app_is_not_removed_again(broker: Any, kit: Any) -> None:
    admin = kit.admin(broker).claims
    app, _ = broker.register_app(
        admin, name="billing", scopes=["read:data:*"], token_ttl=None, ctx=kit.ctx
    )
    broker.deregister_app(admin, app.app_id, kit.ctx)
    with pytest.raises(Conflict) as refused:
        broker.deregister_app(admin, app.app_id, kit.ctx)
    assert refused.value.denial_id
    assert len(_events(broker, event_type="app_deregistered")) == 1
    denied = _events(broker, event_type="app_deregistration_denied")
    assert len(denied) == 1 and refused.value.denial_id in denied[0].detail


def test_a_delegate_chosen_audience_cannot_rewrite_its_token_in_the_views(
    broker: Any, kit: Any, fleet: list[Any]
) -> None:
    # An unrestricted token may be narrowed to any one resource, and a resource may hold
    # "," and "=": the audit detail ends " aud=<it>". Read as fields, a resource naming
    # jti, ttl or parent_jti rewrote the token the operators' views draw: its live
    # delegate shown expired (and left out of a revocation's preview), or drawn as
    # another agent's token (the console's revoke button then naming that one).
    a, b, c = fleet[:3]
    victim = _delegate(broker, kit, a.claims, c)
    forged = f"svc,ttl=1,jti={victim.claims.jti},parent_jti={'0' * 32}"
    hidden = broker.delegate(
        a.claims,
        delegate_to=b.sub,
        scope=["read:data:1"],
        ttl=None,
        resource=forged,
        ctx=kit.ctx,
    )
    assert hidden.claims.aud == (forged,)
    view = broker.inventory.delegations(hidden.claims.jti)
    assert view.token.jti == hidden.claims.jti and view.token.agent_id == b.sub
    assert view.token.state == "active" and view.token.parent_jti == a.claims.jti
    assert view.token.expires_at > view.token.issued_at
    assert broker.inventory.delegations(victim.claims.jti).token.agent_id == c.sub
    alive = {t.jti for t in broker.inventory.preview("agent", a.sub).tokens}
    assert hidden.claims.jti in alive


def _issued(detail: str) -> AuditEvent:
    return AuditEvent(
        1, "2026-12-06T00:00:00Z", "token_issued", "spiffe://t/agent/o/t/i", "t", "", detail,
        "", "success", 0, "", "", "", "",
    )  # fmt: skip


# Would fail if: a resumed token whose event ends with its binding suffix (its audience,
# by_reference: decision 225) were drawn as a registration; or a resource a caller chose
# holding "(resume)" made a registration read as a resumption.
def test_a_resumption_is_told_by_the_brokers_own_marker() -> None:
    jti = "ab" * 16
    resumed = _issued(f"Token issued, jti={jti}, ttl=300 (resume) aud=https://rs.example")
    plain = _issued(f"Token issued, jti={jti}, ttl=300 aud=https://rs.example/x(resume)")
    drawn = [token_of(event) for event in (resumed, plain)]
    assert [node.operation if node else None for node in drawn] == ["resume", "register"]


# Would fail if: a ttl no date holds (text an operator-granted scope could carry into the
# event) raised OverflowError, a 500 on the console's task, agent and token pages.
@pytest.mark.parametrize("ttl", ["9" * 30, "99999999999999"])
def test_a_ttl_no_date_holds_draws_no_expiry(ttl: str) -> None:
    node = token_of(_issued(f"Token issued, jti={'ab' * 16}, ttl={ttl}"))
    assert node is not None and node.expires_at == ""


# Would fail if: the views read a token's scope list up to its first "]". A scope's
# identifier under a wildcard may end with "]", so a delegate asking for
# ["read:data:x]", "write:pay:1"] was drawn as holding read:data:x alone.
def test_a_scope_ending_with_a_bracket_cannot_hide_the_scopes_after_it(
    broker: Any, kit: Any
) -> None:
    both = ["read:data:*", "write:pay:1"]
    launch = kit.launch(broker, both, single_use=False, ttl=600)
    a, b = (kit.register(broker, launch, both, task_id="task-s") for _ in range(2))
    hidden = broker.delegate(
        a.claims,
        delegate_to=b.sub,
        scope=["read:data:x]", "write:pay:1"],
        ttl=None,
        ctx=kit.ctx,
    )
    assert "write:pay:1" in hidden.claims.scope
    view = broker.inventory.delegations(hidden.claims.jti)
    assert view.token.scope.split() == ["read:data:x]", "write:pay:1"]
    assert view.token.expires_at > view.token.issued_at


def test_a_narrowed_token_hangs_below_its_subject_and_ends_with_it(
    broker: Any, kit: Any, fleet: list[Any]
) -> None:
    """A narrowed token descends from the token it narrows (its lineage names it), so the
    views draw it there, mark it revoked with it, and a revocation's preview counts it."""
    a, b = fleet[:2]
    narrowed = broker.exchange_token(
        ExchangeRequest(
            grant_type=GRANT_TYPE,
            subject_token=a.token,
            subject_token_type=ACCESS_TOKEN_TYPE,
            scope="read:data:1",
        ),
        kit.ctx,
    ).issued.claims
    onward = _delegate(broker, kit, narrowed, b)
    root = broker.inventory.delegations(a.claims.jti).token
    assert [child.jti for child in root.children] == [narrowed.jti]
    assert root.children[0].operation == "exchange"
    assert [g.jti for g in root.children[0].children] == [onward.claims.jti]
    preview = broker.inventory.preview("token", a.claims.jti)
    assert {t.jti for t in preview.tokens} == {a.claims.jti, narrowed.jti, onward.claims.jti}

    broker.revoke(kit.admin(broker).claims, level="token", target=a.claims.jti, ctx=kit.ctx)
    view = broker.inventory.delegations(onward.claims.jti)
    assert [n.jti for n in view.chain] == [a.claims.jti, narrowed.jti]
    assert view.token.state == "revoked" and view.chain[1].state == "revoked"
