"""The broker and offline attenuation chains: late audit reports of derivations and uses
(verified, audited once with both times, refused with a denial id), chains accepted where
tokens are validated, refused where a registered holder must act, and revocation on the
broker ending offline-derived descendants."""

from __future__ import annotations

import hashlib
import json
import secrets
from dataclasses import replace
from typing import Any

import pytest
from nacl.signing import SigningKey

from tasklease.core.broker import Broker
from tasklease.core.clock import ManualClock
from tasklease.core.errors import Forbidden, InvalidRequest, Unauthorized
from tasklease.core.offlineaudit import (
    DERIVATION_EVENT,
    REPORT_WINDOW,
    USE_EVENT,
    DerivationReport,
    UseReport,
)
from tasklease.core.store import AuditQuery, RevocationRecord
from tasklease.core.tokens import KIND_AGENT
from tasklease.core.validation import TokenRejected
from tasklease.rules import attenuation as fmt
from tasklease.rules import jws
from tasklease.rules.attenuation import ChainError
from tasklease.rules.binding import Presentation
from tasklease.rules.chainverify import derive

from .conftest import CTX, REGISTER_URL, Kit

URL = "https://rs.example/v1/data"


def _b64json(value: dict[str, Any]) -> str:
    return jws.b64url_encode(json.dumps(value, separators=(",", ":")).encode())


def _proof(key: SigningKey, token: str, *, now: float, htm: str = "GET", htu: str = URL) -> str:
    """An RFC 9449 proof by ``key`` for ``token`` (its ``ath``), dated ``now``."""
    header = {
        "typ": "dpop+jwt",
        "alg": "EdDSA",
        "jwk": {"kty": "OKP", "crv": "Ed25519", "x": jws.b64url_encode(bytes(key.verify_key))},
    }
    claims = {
        "jti": secrets.token_hex(12),
        "htm": htm,
        "htu": htu,
        "iat": int(now),
        "ath": jws.b64url_encode(hashlib.sha256(token.encode()).digest()),
    }
    signing_input = _b64json(header) + "." + _b64json(claims)
    signature = jws.sign_detached(signing_input.encode("ascii"), key)
    return signing_input + "." + jws.b64url_encode(signature)


def _presented(key: SigningKey, token: str, now: float) -> Presentation:
    return Presentation(scheme="DPoP", dpop_proof=_proof(key, token, now=now), htm="GET", htu=URL)


class _Chain:
    """Three levels derived offline from a registered agent's token: A -> B -> C -> D."""

    def __init__(self, broker: Broker, kit: type[Kit]) -> None:
        self.root = kit.register(broker, scope=("read:data:*",), dpop=True)
        now = int(broker.clock.now())
        self.keys = [SigningKey.generate() for _ in range(3)]
        # Each delegate is named under its delegator (docs/formats.md, ``sub``).
        self.subs = [
            "/".join((self.root.sub, *(f"off{j}" for j in range(i + 1)))) for i in range(3)
        ]
        self.levels: list[str] = []
        parent, signer = self.root.token, self.root.key
        for i, (key, sub) in enumerate(zip(self.keys, self.subs, strict=True)):
            parent = derive(
                parent,
                signer,
                delegate=sub,
                delegate_key=bytes(key.verify_key),
                now=now + i,
                ttl=240 - 30 * i,
                scope=["read:data:*"] if i == 0 else None,
            )
            self.levels.append(parent)
            signer = key

    def jti(self, level: int) -> str:
        block = self.levels[level].split("~")[-1]
        payload = json.loads(jws.b64url_decode(block.split(".")[0]))
        return str(payload["jti"])


@pytest.fixture
def chain(broker: Broker, kit: type[Kit]) -> _Chain:
    return _Chain(broker, kit)


def _events(broker: Broker, event_type: str) -> list[Any]:
    events, _ = broker.store.query_audit(AuditQuery(event_type=event_type, limit=100))
    return events


# --- the broker validates chains as verifiers do ------------------------------------------


def test_the_broker_validates_each_level_with_its_holders_proof(
    broker: Broker, chain: _Chain
) -> None:
    now = broker.clock.now()
    for level, (text, key) in enumerate(zip(chain.levels, chain.keys, strict=True)):
        claims = broker.validate(text, presented=_presented(key, text, now), ctx=CTX)
        assert claims.kind == KIND_AGENT
        assert claims.sub == chain.subs[level] and claims.jti == chain.jti(level)
        assert claims.exp <= chain.root.claims.exp
        assert claims.raw["offline"]["blocks"] == level + 1
    # Another key's proof, or none: refused (the chain is bound to its leaf's key).
    with pytest.raises(TokenRejected):
        broker.validate(chain.levels[2], presented=_presented(chain.keys[1], chain.levels[2], now))
    with pytest.raises(TokenRejected):
        broker.validate(chain.levels[2])


def test_revoking_a_middle_block_by_jti_ends_it_and_its_descendants_only(
    broker: Broker, chain: _Chain, kit: type[Kit]
) -> None:
    admin = kit.admin(broker).claims
    # Level 2's block was never reported: revocation by jti is by value.
    broker.revoke(admin, level="token", target=chain.jti(1), ctx=CTX)
    now = broker.clock.now()
    first = broker.validate(
        chain.levels[0], presented=_presented(chain.keys[0], chain.levels[0], now)
    )
    assert first.jti == chain.jti(0)
    for level in (1, 2):
        text = chain.levels[level]
        with pytest.raises(TokenRejected, match="revoked"):
            broker.validate(text, presented=_presented(chain.keys[level], text, now))


def _block_by_hand(
    token: str, signer: SigningKey, *, sub: str, jti: str, now: int
) -> tuple[str, SigningKey]:
    """A chain of one block as a holder's own tool may sign it, whatever its ``jti``."""
    key = SigningKey.generate()
    payload = fmt.canonical_json(
        {
            "sub": sub,
            "key": jws.b64url_encode(bytes(key.verify_key)),
            "exp": now + 60,
            "iat": now,
            "jti": jti,
            "depth": 1,
        }
    )
    chain = fmt.PREFIX + token
    block = fmt.sign_block(fmt.decode(chain).previous(0), payload, signer)
    return chain + fmt.SEPARATOR + block, key


@pytest.mark.parametrize("jti", ["ab" * 32, "tlr_" + "A" * 43])
def test_a_block_whose_id_cannot_be_revoked_is_refused(
    broker: Broker, kit: type[Kit], jti: str
) -> None:
    # A block's id is the holder's choice, and revocable like a token's (docs/formats.md);
    # one shaped like a secret or a by-reference token is refused as a revocation target.
    with pytest.raises(InvalidRequest):
        broker.revoke(kit.admin(broker).claims, level="token", target=jti, ctx=CTX)
    # So no chain may carry one: it would be valid where no revocation by its id could end it.
    root = kit.register(broker, scope=("read:data:*",), dpop=True)
    now = int(broker.clock.now())
    hand = root.sub + "/hand"
    text, key = _block_by_hand(root.token, root.key, sub=hand, jti=jti, now=now)
    with pytest.raises(TokenRejected, match="jti"):
        broker.validate(text, presented=_presented(key, text, now))
    with pytest.raises(ChainError, match="jti"):
        derive(root.token, root.key, delegate=hand, delegate_key=bytes(key.verify_key),
               now=now, ttl=60, jti=jti)  # fmt: skip


def test_a_block_naming_another_registered_agent_is_refused(broker: Broker, kit: type[Kit]) -> None:
    """A holder writes its delegate's name beside a key of its choosing: Alice naming
    Carol's registered id, with a key Alice made, is refused; a name nested under Alice's
    own is accepted and reported as it is written (docs/formats.md, ``sub``)."""
    alice = kit.register(broker, scope=("read:data:*",), dpop=True)
    carol = kit.register(broker, scope=("read:data:*",), task_id="task-2", dpop=True)
    now = int(broker.clock.now())
    made = SigningKey.generate()  # Alice's, not Carol's

    def block(sub: str) -> str:
        payload = fmt.block_payload(
            sub=sub, key=bytes(made.verify_key), exp=now + 60, iat=now, jti="c" * 32, depth=1
        )
        return fmt.append_block(alice.token, payload, alice.key)

    as_carol = block(carol.sub)
    with pytest.raises(TokenRejected, match="nested") as refused:
        broker.validate(as_carol, presented=_presented(made, as_carol, now), ctx=CTX)
    assert refused.value.category == "attenuation"
    helper = block(alice.sub + "/helper")
    claims = broker.validate(helper, presented=_presented(made, helper, now), ctx=CTX)
    assert claims.sub == alice.sub + "/helper" != carol.sub
    assert claims.raw["offline"]["holders"] == [alice.sub, alice.sub + "/helper"]


def test_a_registered_delegate_reports_what_was_handed_to_its_key(
    broker: Broker, kit: type[Kit]
) -> None:
    """A delegate is named under its delegator, never by its own id; the registered agent
    whose key a block names reports that derivation with its own token (its delegator may
    be revoked by then), and an agent whose key no block names may not."""
    alice = kit.register(broker, scope=("read:data:*",), dpop=True)
    bob = kit.register(broker, scope=("read:data:*",), task_id="task-b", dpop=True)
    stranger = kit.register(broker, scope=("read:data:*",), task_id="task-s", dpop=True)
    now = int(broker.clock.now())
    chain = derive(
        alice.token,
        alice.key,
        delegate=alice.sub + "/bob",
        delegate_key=bytes(bob.key.verify_key),
        now=now,
        ttl=60,
    )
    refused = broker.offline_audit.report(
        stranger.claims, derivations=[DerivationReport(chain)], uses=[], ctx=CTX
    )
    assert refused.accepted == 0 and len(refused.refused) == 1
    assert refused.refused[0].denial_id
    reported = broker.offline_audit.report(
        bob.claims, derivations=[DerivationReport(chain)], uses=[], ctx=CTX
    )
    assert reported.accepted == 1 and not reported.refused
    (event,) = _events(broker, DERIVATION_EVENT)
    assert event.agent_id == alice.sub + "/bob" and f"reported_by={bob.sub}" in event.detail


@pytest.mark.parametrize("level", ["agent", "task"])
def test_revoking_the_root_agent_or_task_ends_every_offline_level(
    broker: Broker, chain: _Chain, kit: type[Kit], level: str
) -> None:
    target = chain.root.sub if level == "agent" else chain.root.claims.task_id
    broker.revoke(kit.admin(broker).claims, level=level, target=target, ctx=CTX)
    now = broker.clock.now()
    for text, key in zip(chain.levels, chain.keys, strict=True):
        with pytest.raises(TokenRejected):
            broker.validate(text, presented=_presented(key, text, now))


def test_an_offline_leaf_may_report_but_not_renew_or_delegate(
    broker: Broker, chain: _Chain
) -> None:
    text, key = chain.levels[1], chain.keys[1]
    now = broker.clock.now()
    ctx = replace(CTX, method="GET", url=URL)

    def authenticate(kinds: frozenset[str]) -> Any:
        ctx_with_proof = replace(ctx, dpop=_proof(key, text, now=now))
        return broker.authenticate(f"DPoP {text}", ctx_with_proof, kinds=kinds)

    with pytest.raises(Forbidden) as refused:
        authenticate(frozenset({KIND_AGENT}))  # renew, delegate, release...
    assert refused.value.denial_id
    assert "offline-derived" in refused.value.detail
    reporter = authenticate(frozenset({KIND_AGENT, "tasklease-offline-chain"}))
    assert reporter.sub == chain.subs[1]
    with pytest.raises(Unauthorized):  # a bearer presentation of a chain
        broker.authenticate(f"Bearer {text}", ctx, kinds=frozenset({KIND_AGENT}))


# --- late audit reports -----------------------------------------------------------------


def test_derivations_are_audited_once_with_both_times(
    broker: Broker, chain: _Chain, clock: ManualClock
) -> None:
    clock.advance(120)  # reported two minutes later
    report = [DerivationReport(text) for text in chain.levels]
    outcome = broker.offline_audit.report(chain.root.claims, derivations=report, uses=[], ctx=CTX)
    assert (outcome.accepted, outcome.duplicates, outcome.refused) == (3, 0, ())
    events = _events(broker, DERIVATION_EVENT)
    assert [e.agent_id for e in events] == chain.subs
    first = events[0]
    assert first.detail.startswith("reported late | occurred_at=")
    assert f"jti={chain.jti(0)}" in first.detail and f"reported_by={chain.root.sub}" in first.detail
    assert "occurred_at=2027-01-15T08:00:00Z received_at=2027-01-15T08:02:00Z" in first.detail
    assert first.deleg_depth == 1 and first.task_id == "task-1"
    assert first.chain_root == chain.root.sub
    # Sent again (a retry): nothing new.
    again = broker.offline_audit.report(chain.root.claims, derivations=report, uses=[], ctx=CTX)
    assert (again.accepted, again.duplicates) == (0, 3)
    assert len(_events(broker, DERIVATION_EVENT)) == 3

    def counted(outcome: str) -> float | None:
        labels = {"kind": "derivation", "outcome": outcome}
        return broker.metrics.registry.get_sample_value("tasklease_offline_reports_total", labels)

    assert (counted("accepted"), counted("duplicate")) == (3, 3)
    lateness = broker.metrics.registry.get_sample_value(
        "tasklease_offline_report_lateness_seconds_sum"
    )
    assert lateness == 120 + 119 + 118  # each block was derived a second after the last


def test_a_chain_naming_anothers_block_jti_does_not_silence_its_report(
    broker: Broker, chain: _Chain, kit: type[Kit]
) -> None:
    """A block's jti is its deriver's choice: a chain of another agent that names the jti
    of someone else's block, reported first, must not have the real derivation's report
    (or a verifier's use of it) taken for a replay."""
    mallory = kit.register(broker, scope=("read:data:*",), task_id="task-m", dpop=True)
    key = SigningKey.generate()
    now = int(broker.clock.now())
    decoy = derive(
        mallory.token,
        mallory.key,
        delegate=mallory.sub + "/decoy",
        delegate_key=bytes(key.verify_key),
        now=now,
        ttl=120,
        jti=chain.jti(0),
    )
    first = broker.offline_audit.report(
        mallory.claims, derivations=[DerivationReport(decoy)], uses=[], ctx=CTX
    )
    real = broker.offline_audit.report(
        chain.root.claims, derivations=[DerivationReport(chain.levels[0])], uses=[], ctx=CTX
    )
    assert (first.accepted, real.accepted, real.duplicates) == (1, 1, 0)
    app = kit.app(broker).claims
    for text in (decoy, chain.levels[0]):
        used = broker.offline_audit.report(
            app, derivations=[], uses=[UseReport(text, now, 1)], ctx=CTX
        )
        assert (used.accepted, used.duplicates) == (1, 0)


def test_a_report_the_broker_cannot_verify_is_refused_with_a_denial(
    broker: Broker, chain: _Chain, kit: type[Kit]
) -> None:
    text = chain.levels[1]
    head, _, last = text.rpartition("~")
    payload, _, signature = last.partition(".")
    forged = f"{head}~{payload}.{jws.b64url_encode(bytes(64))}"
    stranger = kit.register(broker, scope=("read:data:*",), task_id="task-2", dpop=True)
    outcome = broker.offline_audit.report(
        chain.root.claims,
        derivations=[DerivationReport(forged), DerivationReport("eyJ.not.achain")],
        uses=[],
        ctx=CTX,
    )
    assert outcome.accepted == 0 and [r.error for r in outcome.refused] == [
        "invalid_request",
        "invalid_request",
    ]
    not_member = broker.offline_audit.report(
        stranger.claims, derivations=[DerivationReport(text)], uses=[], ctx=CTX
    )
    assert [r.error for r in not_member.refused] == ["forbidden"]
    denials = _events(broker, "offline_report_denied")
    assert len(denials) == 3
    for refusal in (*outcome.refused, *not_member.refused):
        assert sum(refusal.denial_id in e.detail for e in denials) == 1
    assert _events(broker, DERIVATION_EVENT) == []


def test_verifier_uses_are_counted_per_minute_and_reported_by_apps_only(
    broker: Broker, chain: _Chain, kit: type[Kit], clock: ManualClock
) -> None:
    app = kit.app(broker).claims
    at = int(broker.clock.now()) + 5
    use = UseReport(chain.levels[2], at, 7)
    outcome = broker.offline_audit.report(app, derivations=[], uses=[use], ctx=CTX)
    assert outcome.accepted == 1
    # The same minute again, even with another count: recorded once.
    later = UseReport(chain.levels[2], at + 1, 9)
    again = broker.offline_audit.report(app, derivations=[], uses=[later], ctx=CTX)
    assert (again.accepted, again.duplicates) == (0, 1)
    (event,) = _events(broker, USE_EVENT)
    assert event.agent_id == chain.subs[2]
    assert f"verifier={app.client_id} count=7" in event.detail
    # An agent does not report uses; a use dated after the chain's expiry is refused.
    by_agent = broker.offline_audit.report(chain.root.claims, derivations=[], uses=[use], ctx=CTX)
    assert [r.error for r in by_agent.refused] == ["forbidden"]
    expired = UseReport(chain.levels[2], at + 3600, 1)
    clock.advance(3700)
    late = broker.offline_audit.report(app, derivations=[], uses=[expired], ctx=CTX)
    assert [r.error for r in late.refused] == ["invalid_request"]


def test_reports_are_accepted_late_but_not_forever(
    broker: Broker, chain: _Chain, clock: ManualClock
) -> None:
    clock.advance(3600)  # the chain expired an hour ago: still reportable
    report = [DerivationReport(chain.levels[0])]
    assert (
        broker.offline_audit.report(
            chain.root.claims, derivations=report, uses=[], ctx=CTX
        ).accepted
        == 1
    )
    clock.advance(REPORT_WINDOW)
    outcome = broker.offline_audit.report(
        chain.root.claims, derivations=[DerivationReport(chain.levels[1])], uses=[], ctx=CTX
    )
    assert [r.error for r in outcome.refused] == ["invalid_request"]


def test_a_batch_is_bounded(broker: Broker, chain: _Chain) -> None:
    with pytest.raises(InvalidRequest):
        broker.offline_audit.report(chain.root.claims, derivations=[], uses=[], ctx=CTX)
    many = [DerivationReport(chain.levels[0])] * 101
    with pytest.raises(InvalidRequest):
        broker.offline_audit.report(chain.root.claims, derivations=many, uses=[], ctx=CTX)


def test_a_critical_chain_is_checked_against_the_store(
    make_broker: Any, kit: type[Kit], clock: ManualClock
) -> None:
    # A revocation another replica committed, not yet in this broker's index.
    broker = make_broker(clock=clock, critical_scopes=("read:data:*",))
    chain = _Chain(broker, kit)
    text, key = chain.levels[1], chain.keys[1]
    now = broker.clock.now()
    assert broker.validate(text, presented=_presented(key, text, now)).jti == chain.jti(1)
    record = RevocationRecord("chain", chain.jti(0), int(now), now + 3600)
    with broker.store.write() as tx:
        tx.insert_revocation(record)
    with pytest.raises(TokenRejected, match="live read"):
        broker.validate(text, presented=_presented(key, text, now))
    # The level the entry names is not its own descendant: valid on the live read too.
    assert broker.validate(
        chain.levels[0], presented=_presented(chain.keys[0], chain.levels[0], now)
    )


def test_a_chain_holding_a_critical_scope_as_a_limited_grant_is_checked_against_the_store(
    make_broker: Any, kit: type[Kit], clock: ManualClock
) -> None:
    """The leaf's authority is a limited ``scope`` grant on a critical scope, not in any
    scope claim: the chain was accepted on the index alone after its root agent was
    revoked by another replica."""
    broker = make_broker(clock=clock, critical_scopes=("write:payments:*",))
    grant = {"type": "scope", "scope": "write:payments:acct-1", "limits": {"max_calls": 3}}
    args, root_key = kit.register_args(broker, kit.launch(broker, ("write:payments:*",)), ())
    args["ctx"] = kit.dpop_ctx(root_key, broker.clock.now(), "POST", REGISTER_URL)
    root = broker.register(**args, authorization_details=[grant])
    leaf_key = SigningKey.generate()
    now = broker.clock.now()
    text = derive(
        root.token,
        root_key,
        delegate=root.claims.sub + "/payer",
        delegate_key=bytes(leaf_key.verify_key),
        now=int(now),
        ttl=120,
    )
    leaf = broker.validate(text, presented=_presented(leaf_key, text, now))
    assert leaf.scope == () and leaf.details == (grant,)
    record = RevocationRecord("agent", root.claims.sub, int(now), now + 3600)
    with broker.store.write() as tx:
        tx.insert_revocation(record)
    with pytest.raises(TokenRejected, match=r"live read\) high_assurance=true"):
        broker.validate(text, presented=_presented(leaf_key, text, now))


def test_introspection_reports_the_leaf_and_its_binding(
    broker: Broker, chain: _Chain, kit: type[Kit]
) -> None:
    admin = kit.admin(broker).claims
    answer = broker.introspect(admin, token=chain.levels[2], ctx=CTX)
    assert answer["active"] is True and answer["jti"] == chain.jti(2)
    assert answer["sub"] == chain.subs[2] and answer["token_type"] == "DPoP"
    assert answer["offline"]["blocks"] == 3 and "agent_jwk" not in answer
    assert answer["exp"] <= chain.root.claims.exp
    # Another app's resource server learns nothing; a revoked level is inactive.
    assert broker.introspect(kit.app(broker).claims, token=chain.levels[2], ctx=CTX) == {
        "active": False
    }
    broker.revoke(admin, level="token", target=chain.jti(1), ctx=CTX)
    assert broker.introspect(admin, token=chain.levels[2], ctx=CTX) == {"active": False}
    assert broker.introspect(admin, token=chain.levels[0], ctx=CTX)["active"] is True


def test_an_offline_leaf_never_spends_a_budget_it_names_by_jti(
    broker: Broker, kit: type[Kit]
) -> None:
    # A chain's last jti is its deriver's choice: naming the jti of another agent's
    # delegated token must not reach that token's max_calls budget (nor any other).
    grant = {
        "type": "resource_access",
        "actions": ["read"],
        "locations": ["https://rs.example/"],
        "limits": {"max_calls": 2},
    }
    launch, _ = broker.create_launch_token(
        kit.admin(broker).claims,
        agent_name="counted",
        allowed_scope=None,
        max_ttl=None,
        single_use=False,
        ttl=None,
        ctx=CTX,
        authorization_details=[grant],
    )

    def agent(task: str, *, bound: bool = False) -> Any:
        args, key = kit.register_args(broker, launch, (), task_id=task)
        if bound:  # its token may start a chain
            args["ctx"] = kit.dpop_ctx(key, broker.clock.now(), "POST", REGISTER_URL)
        return broker.register(**args, authorization_details=[grant]), key

    (mallory, mallory_key), (victim, _) = agent("t-m", bound=True), agent("t-v")
    helper = kit.register(broker, scope=("read:data:*",), task_id="t-h")
    handed = broker.delegate(
        victim.claims,
        delegate_to=helper.sub,
        scope=None,
        ttl=None,
        ctx=CTX,
        authorization_details=[grant],
    )
    call = {"action": "read", "location": "https://rs.example/x"}

    def count(token: str, presented: Presentation | None = None) -> Any:
        return broker.count_call(
            token, kind="resource_access", call=call, audience=None, presented=presented, ctx=CTX
        )[1]

    leaf_key = SigningKey.generate()
    chain = derive(
        mallory.token,
        mallory_key,
        delegate=mallory.claims.sub + "/helper",
        delegate_key=bytes(leaf_key.verify_key),
        now=int(broker.clock.now()),
        ttl=60,
        jti=handed.claims.jti,
    )
    now = broker.clock.now()
    with pytest.raises(Forbidden) as refused:
        count(chain, _presented(leaf_key, chain, now))
    assert refused.value.denial_id
    (event,) = [
        e for e in _events(broker, "grant_call_denied") if refused.value.denial_id in e.detail
    ]
    # Its leaf, named under mallory (docs/formats.md, ``sub``), is no registered agent.
    assert "no agent record" in event.detail or "offline chain" in event.detail
    # Neither the victim's delegated budget nor mallory's own was touched.
    assert [count(handed.token).remaining for _ in range(2)] == [1, 0]
    assert count(mallory.token, _presented(mallory_key, mallory.token, now)).remaining == 1


def test_a_block_exp_no_float_holds_is_a_refused_report_not_an_error(
    broker: Broker, kit: type[Kit]
) -> None:
    """A block's times are read exactly: ``exp`` of 400 digits overflowed when the report's
    window was computed (before the chain is verified), failing the whole batch with no
    denial. Such a block is malformed: its report is refused with its own audited denial,
    and the rest of the batch is kept."""
    alice = kit.register(broker, scope=("read:data:*",), dpop=True)
    now = int(broker.clock.now())
    fields = {
        "sub": alice.sub + "/bob",
        "key": jws.b64url_encode(bytes(alice.key.verify_key)),
        "jti": secrets.token_hex(16),
        "depth": 1,
        "exp": 10**400,
        "iat": now,
    }
    payload = fmt.canonical_json(fields)
    forged = fmt.PREFIX + alice.token + "~" + fmt.sign_block(alice.token, payload, alice.key)
    good = derive(
        alice.token,
        alice.key,
        delegate=alice.sub + "/carol",
        delegate_key=bytes(SigningKey.generate().verify_key),
        now=now,
        ttl=60,
    )
    outcome = broker.offline_audit.report(
        alice.claims,
        derivations=[DerivationReport(forged), DerivationReport(good)],
        uses=[],
        ctx=CTX,
    )
    assert outcome.accepted == 1
    (refusal,) = outcome.refused
    assert refusal.index == 0 and refusal.error == "invalid_request" and refusal.denial_id
    denied = [e for e in _events(broker, "offline_report_denied") if refusal.denial_id in e.detail]
    assert len(denied) == 1
