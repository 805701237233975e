"""Four-level revocation: cascades, idempotence, no lock-out, bounded state, durability."""

from __future__ import annotations

from typing import Any

import pytest

from tasklease.core.broker import Broker
from tasklease.core.errors import InvalidRequest, Unauthorized, Unavailable
from tasklease.core.pending import complete
from tasklease.core.revocation import RevocationIndex
from tasklease.core.store import AuditQuery, RevocationRecord
from tasklease.core.validation import TokenRejected

from .conftest import plain_claims


def events(broker: Any, event_type: str) -> list[Any]:
    return broker.store.query_audit(AuditQuery(event_type=event_type, limit=1000))[0]


def valid(broker: Any, token: str) -> bool:
    try:
        broker.validate(token)
    except TokenRejected:
        return False
    return True


def revoke(broker: Any, kit: Any, level: str, target: str) -> int:
    return int(broker.revoke(kit.admin(broker).claims, level=level, target=target, ctx=kit.ctx))


@pytest.fixture
def launch(broker: Any, kit: Any) -> str:
    return str(kit.launch(broker, ["read:data:*"], single_use=False, ttl=600))


def test_revoke_token_level(broker: Any, kit: Any, launch: str) -> None:
    a = kit.register(broker, launch)
    other = broker.renew(kit.register(broker, launch).claims, kit.ctx)
    assert revoke(broker, kit, "token", a.claims.jti) == 1
    assert not valid(broker, a.token)
    assert valid(broker, other.token)
    with pytest.raises(Unauthorized) as info:
        broker.authenticate(kit.bearer(a.token), kit.ctx)
    assert info.value.detail == "token verification failed"
    failed = events(broker, "token_auth_failed")
    assert "revoked (level token)" in failed[-1].detail
    revoked = events(broker, "token_revoked")
    # A jti is no agent: the event names the token in its detail only.
    assert revoked[-1].agent_id == ""
    assert f"level=token target={a.claims.jti}" in revoked[-1].detail


def test_revoke_agent_level_cascades_to_delegated_tokens(
    broker: Any, kit: Any, launch: str
) -> None:
    a = kit.register(broker, launch, task_id="ta")
    b = kit.register(broker, launch, task_id="tb")
    c = kit.register(broker, launch, task_id="tc")
    a_to_b = broker.delegate(
        a.claims, delegate_to=b.sub, scope=["read:data:1"], ttl=None, ctx=kit.ctx
    )
    b_to_c = broker.delegate(
        a_to_b.claims, delegate_to=c.sub, scope=["read:data:1"], ttl=None, ctx=kit.ctx
    )
    c_to_b = broker.delegate(
        c.claims, delegate_to=b.sub, scope=["read:data:1"], ttl=None, ctx=kit.ctx
    )
    revoke(broker, kit, "agent", a.sub)
    assert not valid(broker, a.token)
    assert not valid(broker, a_to_b.token)  # delegated from a
    assert not valid(broker, b_to_c.token)  # a is further up its chain
    assert valid(broker, b.token)
    assert valid(broker, c.token)
    assert valid(broker, c_to_b.token)
    assert broker.store.get_agent(a.sub).status == "revoked"
    assert broker.store.get_agent(b.sub).status == "active"


def test_revoke_agent_level_kills_tokens_delegated_to_it(
    broker: Any, kit: Any, launch: str
) -> None:
    a = kit.register(broker, launch)
    b = kit.register(broker, launch)
    a_to_b = broker.delegate(
        a.claims, delegate_to=b.sub, scope=["read:data:1"], ttl=None, ctx=kit.ctx
    )
    revoke(broker, kit, "agent", b.sub)
    assert not valid(broker, b.token)
    assert not valid(broker, a_to_b.token)
    assert valid(broker, a.token)


def test_revoke_unknown_agent_id_succeeds(broker: Any, kit: Any) -> None:
    """Revoking is idempotent and needs no existence check (AgentWrit: any target succeeds).

    An agent SPIFFE ID the store does not know (another replica's typo, an agent already
    pruned, an identity from a federated trust domain) must still be revocable.
    """
    target = "spiffe://tasklease.local/agent/orch/task/0123456789abcdef"
    assert revoke(broker, kit, "agent", target) == 1
    assert len(broker.revocations) == 1


def test_revoke_task_level(broker: Any, kit: Any, launch: str) -> None:
    a1 = kit.register(broker, launch, task_id="task-a")
    a2 = kit.register(broker, launch, task_id="task-a")
    b = kit.register(broker, launch, task_id="task-b")
    b_from_a = broker.delegate(
        a1.claims, delegate_to=b.sub, scope=["read:data:1"], ttl=None, ctx=kit.ctx
    )
    revoke(broker, kit, "task", "task-a")
    assert not valid(broker, a1.token)
    assert not valid(broker, a2.token)
    assert not valid(broker, b_from_a.token)  # carries the delegator's task_id
    assert valid(broker, b.token)


def test_revoking_a_task_ends_what_its_agents_were_handed(
    broker: Any, kit: Any, launch: str, clock: Any
) -> None:
    """A task revocation ends the tokens its agents hold by delegation from another task,
    and what they handed on; not the tokens of the task's later agents (task ids are used
    again), which register once ``clock_skew`` has passed (decision 142)."""
    a = kit.register(broker, launch, task_id="task-a")
    b = kit.register(broker, launch, task_id="task-b")
    c = kit.register(broker, launch, task_id="task-c")
    b_from_a = broker.delegate(
        a.claims, delegate_to=b.sub, scope=["read:data:1"], ttl=None, ctx=kit.ctx
    )
    c_from_b = broker.delegate(
        b_from_a.claims, delegate_to=c.sub, scope=["read:data:1"], ttl=None, ctx=kit.ctx
    )
    clock.advance(2)
    revoke(broker, kit, "task", "task-b")
    assert not valid(broker, b.token)
    assert not valid(broker, b_from_a.token)  # held by an agent of task-b
    assert not valid(broker, c_from_b.token)  # delegated through one
    assert valid(broker, a.token)
    assert valid(broker, c.token)
    clock.advance(2)
    with pytest.raises(Unavailable) as soon:  # within the entry's skew: come back after it
        kit.register(broker, launch, task_id="task-b")
    assert soon.value.retry_after == broker.config.clock_skew + 1 - 2
    clock.advance(soon.value.retry_after)
    later = kit.register(broker, launch, task_id="task-b")  # the task id, used again
    handed = broker.delegate(
        a.claims, delegate_to=later.sub, scope=["read:data:1"], ttl=None, ctx=kit.ctx
    )
    onward = broker.delegate(
        handed.claims, delegate_to=c.sub, scope=["read:data:1"], ttl=None, ctx=kit.ctx
    )
    assert valid(broker, later.token)
    assert valid(broker, handed.token)
    assert valid(broker, onward.token)


def test_revoke_chain_level_spares_the_root(broker: Any, kit: Any, launch: str) -> None:
    root = kit.register(broker, launch)
    b = kit.register(broker, launch)
    c = kit.register(broker, launch)
    hop1 = broker.delegate(
        root.claims, delegate_to=b.sub, scope=["read:data:1"], ttl=None, ctx=kit.ctx
    )
    hop2 = broker.delegate(
        hop1.claims, delegate_to=c.sub, scope=["read:data:1"], ttl=None, ctx=kit.ctx
    )
    unrelated = broker.delegate(
        c.claims, delegate_to=b.sub, scope=["read:data:1"], ttl=None, ctx=kit.ctx
    )
    revoke(broker, kit, "chain", root.sub)
    assert valid(broker, root.token)  # the root's own token lives on
    assert not valid(broker, hop1.token)
    assert not valid(broker, hop2.token)
    assert valid(broker, b.token)
    assert valid(broker, c.token)
    assert valid(broker, unrelated.token)
    # The root can still delegate afresh once the clock is past the entry, which is dated
    # clock_skew ahead (decision 142); until then it is asked to come back.
    with pytest.raises(Unavailable) as soon:
        broker.delegate(
            root.claims, delegate_to=b.sub, scope=["read:data:1"], ttl=None, ctx=kit.ctx
        )
    assert soon.value.retry_after == broker.config.clock_skew + 1 and soon.value.denial_id
    broker.clock.advance(soon.value.retry_after)
    fresh = broker.delegate(
        root.claims, delegate_to=b.sub, scope=["read:data:1"], ttl=None, ctx=kit.ctx
    )
    assert valid(broker, fresh.token)


def test_a_revocation_is_timed_by_its_write_not_its_check(
    broker: Any, kit: Any, launch: str
) -> None:
    """A delegation that commits while a revocation is on its way (checked, not yet
    written) was made before the revocation, and is matched by it: ``revoked_at`` is the
    time of the write."""
    root = kit.register(broker, launch)
    b = kit.register(broker, launch)
    admin = kit.admin(broker).claims
    pending = broker.prepare_revoke(admin, level="chain", target=root.sub, ctx=kit.ctx)
    broker.clock.advance(5)
    hop = broker.delegate(
        root.claims, delegate_to=b.sub, scope=["read:data:1"], ttl=None, ctx=kit.ctx
    )
    complete(broker.kernel, pending)
    assert not valid(broker, hop.token)
    assert valid(broker, root.token)
    (entry,) = broker.store.revocations_since(0)
    assert entry.revoked_at == int(broker.clock.now()) + broker.config.clock_skew


def test_revocation_is_idempotent(broker: Any, kit: Any, launch: str) -> None:
    a = kit.register(broker, launch)
    for _ in range(3):
        assert revoke(broker, kit, "agent", a.sub) == 1
        assert revoke(broker, kit, "token", a.claims.jti) == 1
    assert not valid(broker, a.token)
    # agent a.sub; token jti, with its descendants (chain jti): one entry each, once.
    assert len(broker.revocations) == 3
    assert len(broker.store.revocations_since(0)) == 3
    assert len(events(broker, "token_revoked")) == 6


@pytest.mark.parametrize(
    ("level", "target"),
    [
        ("session", "x"),
        ("TOKEN", "x"),
        ("", "x"),
        (None, "x"),
        ("token", ""),
        ("token", None),
        ("token", 42),
        ("token", "x" * 2049),
    ],
)
def test_invalid_revocation_is_invalid_request(
    broker: Any, kit: Any, level: Any, target: Any
) -> None:
    with pytest.raises(InvalidRequest):
        broker.revoke(kit.admin(broker).claims, level=level, target=target, ctx=kit.ctx)
    assert len(broker.revocations) == 0
    assert broker.store.revocations_since(0) == []
    assert events(broker, "token_revoked") == []


def test_revoking_admin_is_not_a_permanent_lockout(broker: Any, kit: Any) -> None:
    admin = broker.admin_auth(kit.admin_secret, kit.ctx)
    assert broker.authenticate(kit.bearer(admin.token), kit.ctx).sub == "admin"
    broker.revoke(admin.claims, level="agent", target="admin", ctx=kit.ctx)
    with pytest.raises(Unauthorized):
        broker.authenticate(kit.bearer(admin.token), kit.ctx)
    # Within clock_skew of it (the entry covers every clock within the skew: decision 142)
    # a new admin token would be dead on arrival, so the sign-in is asked to come back...
    same_second = kit.admin(broker)
    with pytest.raises(Unauthorized):
        broker.authenticate(kit.bearer(same_second.token), kit.ctx)
    with pytest.raises(Unavailable) as soon:
        broker.admin_auth(kit.admin_secret, kit.ctx)
    assert soon.value.retry_after == broker.config.clock_skew + 1 and soon.value.denial_id
    (refused,) = events(broker, "admin_auth_failed")
    assert "revoked_moments_ago" in refused.detail
    assert refused.detail.endswith(f"denial={soon.value.denial_id}")
    # ...and then the admin can work again.
    broker.clock.advance(soon.value.retry_after)
    fresh = broker.admin_auth(kit.admin_secret, kit.ctx)
    assert broker.authenticate(kit.bearer(fresh.token), kit.ctx).jti == fresh.claims.jti


def test_revoking_admin_kills_todays_token_only(broker: Any, kit: Any) -> None:
    admin = kit.admin(broker)
    assert broker.authenticate(kit.bearer(admin.token), kit.ctx).sub == "admin"
    broker.revoke(admin.claims, level="agent", target="admin", ctx=kit.ctx)
    with pytest.raises(Unauthorized):
        broker.authenticate(kit.bearer(admin.token), kit.ctx)
    broker.clock.advance(broker.config.clock_skew + 1)
    fresh = kit.admin(broker)
    assert broker.authenticate(kit.bearer(fresh.token), kit.ctx).sub == "admin"


def test_revoke_prune_bounds_state(broker: Any, kit: Any, launch: str, store: Any) -> None:
    a = kit.register(broker, launch)
    for level, target in (
        ("token", a.claims.jti),
        ("agent", a.sub),
        ("task", "task-1"),
        ("chain", a.sub),
    ):
        revoke(broker, kit, level, target)
    # Four levels, and the token-level entry's twin that ends its descendants.
    assert len(broker.revocations) == 5
    cfg = broker.config
    broker.clock.advance(cfg.max_ttl + cfg.clock_skew)
    assert broker.prune() == 0  # nothing it could match is dead yet
    assert len(broker.revocations) == 5
    broker.clock.advance(2)  # max_ttl + skew + 2 since the revocation
    assert broker.prune() == 2  # the token's entries
    # Agent, task and chain entries on an agent are dated clock_skew ahead (decision 142),
    # and live as long past that.
    broker.clock.advance(cfg.clock_skew - 2)
    assert broker.prune() == 0
    broker.clock.advance(1)  # max_ttl + 2 skew + 1 since the revocation
    assert broker.prune() == 3
    assert len(broker.revocations) == 0
    assert store.revocations_since(0) == []
    assert store.load_revocations(0) == []


def test_revoked_token_stays_dead_until_it_could_no_longer_validate(
    broker: Any, kit: Any, launch: str
) -> None:
    """Pruning never resurrects a token: entries outlive everything they match."""
    a = kit.register(broker, launch)  # ttl 300
    revoke(broker, kit, "agent", a.sub)
    clock = broker.clock
    for step in range(0, a.claims.exp - a.claims.iat + broker.config.clock_skew + 1, 15):
        clock.set(a.claims.iat + step)
        broker.prune()
        assert not valid(broker, a.token), step


def test_new_broker_on_same_store_reloads_unexpired_revocations(
    broker: Any, kit: Any, launch: str, store: Any, keyring: Any, clock: Any, make_broker: Any
) -> None:
    a = kit.register(broker, launch)
    b = kit.register(broker, launch)
    revoke(broker, kit, "agent", a.sub)
    renewed = broker.renew(b.claims, kit.ctx)  # b's first token revoked by renewal
    restarted = make_broker(store=store, keyring=keyring, clock=clock)
    assert isinstance(restarted, Broker)
    assert len(restarted.revocations) == 2
    assert not valid(restarted, a.token)
    assert not valid(restarted, b.token)
    assert valid(restarted, renewed.token)
    # After expiry, a restart loads nothing (an agent entry is dated clock_skew ahead).
    clock.advance(broker.config.max_ttl + 2 * broker.config.clock_skew + 2)
    later = make_broker(store=store, keyring=keyring, clock=clock)
    assert len(later.revocations) == 0


def test_refresh_revocations_picks_up_another_replica(
    broker: Any, kit: Any, launch: str, store: Any, keyring: Any, clock: Any, make_broker: Any
) -> None:
    replica = make_broker(store=store, keyring=keyring, clock=clock)
    a = kit.register(broker, launch)
    assert valid(replica, a.token)
    revoke(broker, kit, "agent", a.sub)
    assert valid(replica, a.token)  # not yet seen
    assert replica.refresh_revocations() == 1
    assert not valid(replica, a.token)
    assert replica.refresh_revocations() == 0


def test_release_revokes_the_token(broker: Any, kit: Any, launch: str) -> None:
    a = kit.register(broker, launch)
    broker.release(a.claims, kit.ctx)
    assert not valid(broker, a.token)
    assert len(events(broker, "token_released")) == 1


def test_index_match_rules() -> None:
    from tasklease.core.tokens import Claims, DelegationRecord

    def claims(**kw: Any) -> Claims:
        return plain_claims(**kw)

    index = RevocationIndex()
    index.apply(
        [
            RevocationRecord("agent", "s", 100, 1000),
            RevocationRecord("task", "t", 50, 1000),
            RevocationRecord("chain", "root", 100, 1000),
            RevocationRecord("token", "dead", 0, 1000),
            RevocationRecord("bogus", "s", 100, 1000),  # unknown level: ignored
        ]
    )
    assert len(index) == 4
    assert index.match(claims()) == "agent"
    assert index.match(claims(iat=101, oiat=101)) is None  # registered after: not matched
    assert index.match(claims(iat=101)) == "agent"  # a renewal of a registration before it
    assert index.match(claims(sub="x", iat=50, oiat=50)) == "task"
    assert index.match(claims(sub="x", task_id="")) is None
    assert index.match(claims(sub="x", iat=101, jti="dead")) == "token"
    hop = DelegationRecord("root", (), "", "")
    assert index.match(claims(sub="x", task_id="", delegation_chain=(hop,))) == "chain"
    assert index.match(claims(sub="root", task_id="")) is None  # the root itself lives
    # The holder's task, named by its SPIFFE ID, proven registered by the token's iat.
    held = "spiffe://td/agent/o/t/0123456789abcdef"
    assert index.match(claims(sub=held, task_id="u", iat=50, oiat=10)) == "task"
    assert index.match(claims(sub=held, task_id="u", iat=51, oiat=10)) is None
    # A hop's delegator, proven registered by the hop's delegated_at.
    early = DelegationRecord(held, (), "1970-01-01T00:00:50Z", "")
    late = DelegationRecord(held, (), "1970-01-01T00:00:51Z", "")
    assert index.match(claims(sub="x", task_id="u", iat=60, delegation_chain=(early,))) == "task"
    assert index.match(claims(sub="x", task_id="u", iat=60, delegation_chain=(late,))) is None
    # A later revocation widens the entry.
    index.apply([RevocationRecord("agent", "s", 150, 1000)])
    assert index.match(claims(iat=120, oiat=120)) == "agent"
    assert index.prune(999) == 0
    assert index.prune(1000) == 4
    assert len(index) == 0


def _claims(**kw: Any) -> Any:
    mine = {"sub": "spiffe://td/agent/o/mine/0123456789abcdef", "task_id": "root-task"}
    return plain_claims(**{**mine, "exp": 300, "oiat": 90, **kw})


def _hop(agent: str, delegated_at: str) -> Any:
    from tasklease.core.tokens import DelegationRecord

    return DelegationRecord(agent, (), delegated_at, "")


OURS = "spiffe://td/agent/o/{}/00000000000000{:02d}"
THEIRS = "spiffe://partner.example/agent/o/{}/00000000000000{:02d}"


def test_a_hop_time_never_reaches_past_the_token_nor_reads_the_host_zone() -> None:
    """A ``delegated_at`` in the far future (a federated domain writes what it likes, and
    the exchange re-signs it) is taken as the token's ``iat``, and so is one without an
    offset: an entry made after the token still matches."""
    index = RevocationIndex()
    index.apply([RevocationRecord("chain", OURS.format("a", 1), 150, 1000)])
    index.apply([RevocationRecord("task", "hop-task", 150, 1000)])
    for text in ("9999-12-31T23:59:59Z", "2030-01-01T00:00:00", "not a time", ""):
        chain = (_hop(OURS.format("a", 1), text),)
        assert index.match(_claims(delegation_chain=chain)) == "chain", text
        chain = (_hop(OURS.format("hop-task", 2), text),)
        assert index.match(_claims(delegation_chain=chain)) == "task", text
        # A token issued after the entry is not matched by either.
        late = (_hop(OURS.format("hop-task", 2), text),)
        assert index.match(_claims(iat=151, oiat=151, delegation_chain=late)) is None, text


def test_a_task_entry_names_tasks_of_the_holders_trust_domain_only() -> None:
    index = RevocationIndex()
    index.apply([RevocationRecord("task", "build", 150, 1000)])
    theirs = (_hop(THEIRS.format("build", 1), "1970-01-01T00:01:00Z"),)
    assert index.match(_claims(delegation_chain=theirs)) is None
    ours = (_hop(OURS.format("build", 1), "1970-01-01T00:01:00Z"),)
    assert index.match(_claims(delegation_chain=ours)) == "task"
    assert index.match(_claims(sub=OURS.format("build", 3))) == "task"


def test_a_standing_probe_proves_no_registration_time() -> None:
    """An offline block's standing probe (its delegate alone, ``iat`` 0) is matched by
    an agent entry whenever made, never by a task entry: the task id may be a later
    run's."""
    from tasklease.rules.chainverify import RevocationProbe

    index = RevocationIndex()
    index.apply([RevocationRecord("task", "build", 150, 1000)])
    delegate = OURS.format("build", 4)
    assert index.match(RevocationProbe("", delegate, 0, "", (), ())) is None
    index.apply([RevocationRecord("agent", delegate, 150, 1000)])
    assert index.match(RevocationProbe("", delegate, 0, "", (), ())) == "agent"


def test_keys_name_every_entry_match_could_use() -> None:
    """A live read fetches :meth:`RevocationIndex.keys`; an index of only those entries
    decides as the whole index does, for every level and every way a task is named."""
    ours_a, ours_b = OURS.format("task-a", 1), OURS.format("task-b", 2)
    entries = [
        RevocationRecord("token", "j", 150, 1000),
        RevocationRecord("agent", ours_a, 150, 1000),
        RevocationRecord("chain", ours_b, 150, 1000),
        RevocationRecord("chain", "ancestor", 150, 1000),
        RevocationRecord("task", "root-task", 150, 1000),
        RevocationRecord("task", "task-a", 150, 1000),
        RevocationRecord("task", "task-b", 150, 1000),
        RevocationRecord("task", "mine", 150, 1000),
    ]
    hops = (_hop(ours_a, "1970-01-01T00:01:00Z"), _hop(ours_b, "1970-01-01T00:01:00Z"))
    cases = [
        _claims(),
        _claims(jti="other"),
        _claims(jti="other", task_id="x"),
        _claims(jti="other", task_id="x", lineage=("ancestor",)),
        _claims(jti="other", task_id="x", delegation_chain=hops),
        _claims(jti="other", task_id="x", delegation_chain=hops[1:]),
        _claims(jti="other", task_id="x", sub=ours_a),
    ]
    for entry in entries:
        full = RevocationIndex()
        full.apply([entry])
        for claims in cases:
            live = RevocationIndex()
            keys = RevocationIndex.keys(claims)
            live.apply([e for e in [entry] if (e.level, e.target) in keys])
            assert live.match(claims) == full.match(claims), (entry, claims)


# --- apps -------------------------------------------------------------------------------


def test_deregistered_app_is_shut_out_at_once(broker: Any, kit: Any) -> None:
    app, secret = broker.register_app(
        kit.admin(broker).claims,
        name="billing-bot",
        scopes=["read:data:*"],
        token_ttl=None,
        ctx=kit.ctx,
    )
    issued = broker.app_auth(app.client_id, secret, kit.ctx)
    claims = broker.authenticate(kit.bearer(issued.token), kit.ctx)
    assert claims.sub == f"app:{app.app_id}"
    broker.deregister_app(kit.admin(broker).claims, app.app_id, kit.ctx)
    with pytest.raises(Unauthorized):
        broker.authenticate(kit.bearer(issued.token), kit.ctx)
    with pytest.raises(Unauthorized):
        broker.app_auth(app.client_id, secret, kit.ctx)
    failed = events(broker, "app_auth_failed")
    assert "reason=app_inactive" in failed[-1].detail
    assert broker.get_app(app.app_id).status == "inactive"


@pytest.mark.parametrize("change", ["deregister", "update"])
def test_an_app_sign_in_checked_across_its_removal_gives_no_token(
    broker: Any, kit: Any, clock: Any, monkeypatch: pytest.MonkeyPatch, change: str
) -> None:
    """The app's secret is checked against the row read before argon2 runs; a removal (or
    any change) committed meanwhile, its revocation entry dated the second before the
    token, must refuse the sign-in: the ordinary 401, audited with its denial id."""
    import tasklease.core.appauth as appauth_module

    admin = kit.admin(broker).claims
    app, secret = broker.register_app(
        admin, name="billing-bot", scopes=["read:data:*"], token_ttl=None, ctx=kit.ctx
    )
    clock.advance(5.9)
    real_verify = appauth_module.verify_secret
    done: list[bool] = []

    def verify_while_the_admin_changes_it(stored: str | None, given: str) -> bool:
        ok = real_verify(stored, given)
        if not done:
            if change == "deregister":
                broker.deregister_app(admin, app.app_id, kit.ctx)
            else:
                broker.update_app(admin, app.app_id, scopes=None, token_ttl=600, ctx=kit.ctx)
            done.append(True)
            clock.advance(0.2)  # the check ends in the next second
        return ok

    monkeypatch.setattr(appauth_module, "verify_secret", verify_while_the_admin_changes_it)
    with pytest.raises(Unauthorized) as refused:
        broker.app_auth(app.client_id, secret, kit.ctx)
    assert refused.value.detail == "Authentication failed" and refused.value.denial_id
    (hit,) = [
        e
        for e in events(broker, "app_auth_failed")
        if e.detail.endswith(f"denial={refused.value.denial_id}")
    ]
    assert "reason=app_changed_during_sign_in" in hit.detail
    assert events(broker, "app_authenticated") == []


def test_a_new_app_key_ends_the_apps_live_tokens(broker: Any, kit: Any, clock: Any) -> None:
    """As an operator's rotation does: whoever held the old key, or a token signed in
    before the change, holds nothing after it (the app signs in again)."""
    import base64

    from nacl.signing import SigningKey

    admin = kit.admin(broker).claims
    app, secret = broker.register_app(
        admin, name="keyed-bot", scopes=["read:data:*"], token_ttl=None, ctx=kit.ctx
    )
    before = broker.app_auth(app.client_id, secret, kit.ctx)
    clock.advance(1)
    new_key = base64.b64encode(bytes(SigningKey.generate().verify_key)).decode()
    broker.update_app(
        admin, app.app_id, scopes=None, token_ttl=None, public_key=new_key, ctx=kit.ctx
    )
    with pytest.raises(Unauthorized):
        broker.authenticate(f"Bearer {before.token}", kit.ctx)
    (updated,) = events(broker, "app_updated")
    assert f"revoked level=agent target=app:{app.app_id}" in updated.detail
    clock.advance(1)
    # Within clock_skew of the change a token would be born revoked (the entry covers
    # every clock within the skew: decision 142): come back when it is past.
    with pytest.raises(Unavailable) as soon:
        broker.app_auth(app.client_id, secret, kit.ctx)
    assert soon.value.retry_after == broker.config.clock_skew and soon.value.denial_id
    clock.advance(soon.value.retry_after)
    after = broker.app_auth(app.client_id, secret, kit.ctx)  # a sign-in after it works
    assert broker.authenticate(f"Bearer {after.token}", kit.ctx).sub == f"app:{app.app_id}"
    broker.update_app(admin, app.app_id, scopes=None, token_ttl=600, ctx=kit.ctx)
    assert broker.authenticate(f"Bearer {after.token}", kit.ctx)  # no key change: kept


def test_an_app_token_signed_in_while_its_removal_was_on_its_way_is_ended(
    broker: Any, kit: Any, clock: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The removal's revocation is dated when it is written, not when the call began: a
    sign-in that committed in between, a second later, is covered."""
    admin = kit.admin(broker).claims
    app, secret = broker.register_app(
        admin, name="late-bot", scopes=["read:data:*"], token_ttl=None, ctx=kit.ctx
    )
    real_commit = broker.kernel.commit
    late: list[Any] = []

    def commit_after_a_sign_in(unit: Any) -> Any:
        if not late:  # the removal's commit: a sign-in gets there first, a second later
            late.append(None)
            clock.advance(1.5)
            late[0] = broker.app_auth(app.client_id, secret, kit.ctx)
        return real_commit(unit)

    monkeypatch.setattr(broker.kernel, "commit", commit_after_a_sign_in)
    broker.deregister_app(admin, app.app_id, kit.ctx)
    monkeypatch.undo()
    with pytest.raises(Unauthorized):
        broker.authenticate(f"Bearer {late[0].token}", kit.ctx)


def test_a_public_id_shaped_like_a_secret_can_be_revoked(broker: Any, kit: Any) -> None:
    """Another domain chooses its agents' and tokens' ids, an identity provider its
    subjects (a pairwise OIDC subject, a TPM-attested SPIFFE ID are often a SHA-256 in
    hex); a SPIFFE ID, a ``fed:`` id or an attestation ancestor holding 64 hexadecimal
    characters is public, not a secret, and must stay revocable."""
    assert revoke(broker, kit, "agent", "spiffe://partner.example/agent/o/t/" + "ab" * 32) == 1
    assert revoke(broker, kit, "chain", "fed:partner.example:" + "cd" * 32) == 1
    assert revoke(broker, kit, "chain", "attest:oidc:ci:" + "12" * 32) == 1
    with pytest.raises(InvalidRequest, match="must not hold a secret"):
        revoke(broker, kit, "chain", "ef" * 32)


@pytest.mark.parametrize("change", ["new-key", "key-removed", "secret-rotated", "deregistered"])
def test_an_apps_launch_tokens_end_with_its_credential(
    broker: Any, kit: Any, clock: Any, change: str
) -> None:
    """As an operator's do (decision 178): a launch token an app made before its key
    changed or its secret was rotated (someone held the old one) or before it was
    deregistered admits no agent more. Agents it launched before keep their identity; a
    change of scopes alone keeps the launch token (held to the app's ceiling as it is
    now)."""
    import base64

    from nacl.signing import SigningKey

    def key() -> str:
        return base64.b64encode(bytes(SigningKey.generate().verify_key)).decode()

    admin = kit.admin(broker).claims
    app, _ = broker.register_app(
        admin,
        name="launcher",
        scopes=["read:data:*"],
        token_ttl=None,
        public_key=key(),
        ctx=kit.ctx,
    )
    launch, _ = broker.create_launch_token(
        kit.app(broker, app.app_id).claims,
        agent_name="worker",
        allowed_scope=["read:data:*"],
        max_ttl=None,
        single_use=False,
        max_uses=100,
        ttl=3600,
        ctx=kit.ctx,
    )
    before = kit.register(broker, launch, task_id="task-0")
    clock.advance(1)
    broker.update_app(admin, app.app_id, scopes=["read:data:*"], token_ttl=600, ctx=kit.ctx)
    assert kit.register(broker, launch, task_id="task-1")  # not a credential change
    clock.advance(1)
    if change == "deregistered":
        broker.deregister_app(admin, app.app_id, kit.ctx)
    elif change == "secret-rotated":
        broker.rotate_app_secret(admin, app.app_id, kit.ctx)
    else:
        new = key() if change == "new-key" else ""
        broker.update_app(
            admin, app.app_id, scopes=None, token_ttl=None, public_key=new, ctx=kit.ctx
        )
    clock.advance(120)
    args, _ = kit.register_args(broker, launch, task_id="task-2")
    with pytest.raises(Unauthorized) as refused:
        broker.register(**args)
    assert refused.value.denial_id
    (hit,) = [
        e.detail
        for e in events(broker, "registration_failed")
        if refused.value.denial_id in e.detail
    ]
    assert app.app_id in hit
    assert ("credential changed since" if change != "deregistered" else "removed") in hit
    if change != "deregistered":
        assert valid(broker, before.token)


@pytest.mark.parametrize(
    "spelling",
    [
        lambda sub: sub.replace("spiffe://", "SPIFFE://", 1),
        lambda sub: sub.replace("spiffe://tasklease.local", "spiffe://TaskLease.local", 1),
        lambda sub: sub + "/",
        lambda sub: sub.replace("/agent/", "/agent//", 1),
    ],
)
@pytest.mark.parametrize("level", ["agent", "chain"])
def test_a_spiffe_id_spelt_as_no_token_names_it_is_refused_not_written(
    broker: Any, kit: Any, launch: str, spelling: Any, level: str
) -> None:
    """An entry on ``SPIFFE://...`` or an uppercase trust domain was written, answered 1
    and published, and matched nothing: the agent's token went on validating."""
    a = kit.register(broker, launch)
    with pytest.raises(InvalidRequest) as info:
        revoke(broker, kit, level, spelling(a.claims.sub))
    assert info.value.detail == "target is not a SPIFFE ID as tokens name it"
    assert len(broker.revocations) == 0
    assert valid(broker, a.token)
    assert revoke(broker, kit, level, a.claims.sub) == 1
    if level == "agent":  # a chain entry ends what the agent handed on, not its own
        assert not valid(broker, a.token)


def test_spiffe_ids_are_read_as_the_specification_writes_them() -> None:
    from tasklease.core.spiffe import is_spiffe_id

    for good in ("spiffe://td", "spiffe://t-d.x_1/a/B.c/-", "spiffe://td/" + "a" * 2000):
        assert is_spiffe_id(good), good
    for bad in (
        "spiffe://",
        "Spiffe://td",
        "spiffe://TD/a",
        "spiffe://td/",
        "spiffe://td//a",
        "spiffe://td/a/./b",
        "spiffe://td/a/..",
        "spiffe://td/a b",
        "spiffe://td/é",
        "spiffe://td:8080/a",
        "spiffe://td/" + "a" * 2040,
    ):
        assert not is_spiffe_id(bad), bad


def test_a_target_is_bounded_in_bytes_as_a_database_indexes_it(broker: Any, kit: Any) -> None:
    """2,048 characters outside ASCII passed the bound and failed PostgreSQL's index on
    (level, target) with a 500 (``postgres/test_revocation_target_bytes.py``)."""
    from tasklease.core.records import MAX_TARGET
    from tasklease.core.revoking import unrevocable

    wide = "\u6f22" * (MAX_TARGET // 3 + 1)  # 683 characters, 2,049 bytes
    assert unrevocable("task", wide) == "long"
    assert unrevocable("task", wide[:-1]) == ""
    with pytest.raises(InvalidRequest) as info:
        revoke(broker, kit, "task", wide)
    assert info.value.detail == "target is too long"
    assert len(broker.revocations) == 0
    assert revoke(broker, kit, "task", wide[:-1]) == 1


def test_a_widened_entry_reloads_without_a_warning_of_a_database_gone_back(
    broker: Any,
    kit: Any,
    launch: str,
    store: Any,
    keyring: Any,
    clock: Any,
    make_broker: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Revoking an agent again widens its entry under a new ``seq``: the reader reloads
    (that costs a read, never a miss) and says why, without the warning meant for a
    database that went back in time."""
    replica = make_broker(store=store, keyring=keyring, clock=clock)
    a = kit.register(broker, launch)
    revoke(broker, kit, "agent", a.sub)
    assert replica.refresh_revocations() == 1
    clock.advance(5)
    revoke(broker, kit, "agent", a.sub)  # widened: a later revoked_at, a new seq
    caplog.clear()
    with caplog.at_level("INFO", logger="tasklease"):
        replica.refresh_revocations()
    assert not valid(replica, a.token)
    assert not [r for r in caplog.records if r.levelname == "WARNING"], caplog.text
    assert "widened" in caplog.text


def test_a_pruned_entry_reloads_without_a_warning_of_a_database_gone_back(
    broker: Any,
    kit: Any,
    launch: str,
    store: Any,
    keyring: Any,
    clock: Any,
    make_broker: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The last entry a replica read, pruned once nothing it matches can validate, is gone
    from the store: the reader reloads and says why, without the warning meant for a
    database that went back in time."""
    replica = make_broker(store=store, keyring=keyring, clock=clock)
    a = kit.register(broker, launch)
    revoke(broker, kit, "agent", a.sub)
    assert replica.refresh_revocations() == 1
    cfg = broker.config
    clock.advance(cfg.max_ttl + 2 * cfg.clock_skew + 1)
    assert broker.prune() > 0 and store.revocations_since(0) == []
    caplog.clear()
    with caplog.at_level("INFO", logger="tasklease"):
        replica.refresh_revocations()
    assert not [r for r in caplog.records if r.levelname == "WARNING"], caplog.text
    assert "pruned" in caplog.text


def test_another_entry_for_the_same_target_at_the_anchors_seq_is_a_database_gone_back(
    broker: Any,
    kit: Any,
    launch: str,
    store: Any,
    keyring: Any,
    clock: Any,
    make_broker: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A store that went back in time and handed the last ``seq`` a replica read to another
    revocation of the same target (not widened under a later ``seq``) is warned about."""
    replica = make_broker(store=store, keyring=keyring, clock=clock)
    a = kit.register(broker, launch)
    revoke(broker, kit, "agent", a.sub)
    assert replica.refresh_revocations() == 1
    (key,) = list(store._revocations)
    held = store._revocations[key]
    # What a restore followed by a new revocation of the same agent leaves at that seq.
    store._revocations[key] = RevocationRecord(
        held.level, held.target, held.revoked_at + 3, held.expires_at + 3, held.seq
    )
    caplog.clear()
    with caplog.at_level("INFO", logger="tasklease"):
        replica.refresh_revocations()
    assert "went back in time" in caplog.text
    assert not valid(replica, a.token)


def test_one_refresh_reads_the_store_at_a_time(
    broker: Any, kit: Any, launch: str, store: Any, keyring: Any, clock: Any, make_broker: Any
) -> None:
    """The watch's thread and a caller refreshing together would move one anchor from two
    reads: the second waits for the first."""
    import threading

    replica = make_broker(store=store, keyring=keyring, clock=clock)
    a = kit.register(broker, launch)
    revoke(broker, kit, "agent", a.sub)
    inside, release, reads = threading.Event(), threading.Event(), []
    since = store.revocations_since

    def slow_since(seq: int) -> list[RevocationRecord]:
        reads.append(seq)
        inside.set()
        release.wait(5)
        return since(seq)

    store.revocations_since = slow_since
    first = threading.Thread(target=replica.refresh_revocations)
    second = threading.Thread(target=replica.refresh_revocations)
    first.start()
    assert inside.wait(5)
    second.start()
    second.join(0.2)
    try:
        assert len(reads) == 1, reads  # the second refresh has not read yet
    finally:
        release.set()
        first.join(5)
        second.join(5)
    assert len(reads) == 2 and not valid(replica, a.token)
