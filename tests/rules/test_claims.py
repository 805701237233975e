"""The claim rules: time (no leeway on exp), audience, lifetime, max_exp, chain, act, lineage."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tasklease.rules.claims import (
    MAX_LINEAGE,
    ClaimRejected,
    DelegationRecord,
    act_actors,
    act_claim,
    chain_hash,
    check_act,
    check_claims,
    check_time,
    delegation_chain_of,
    holder_of,
    is_expired,
    lineage_of,
    well_formed_cnf,
)

LEAF, ROOT = "spiffe://t/agent/leaf", "spiffe://t/agent/root"
HOP = DelegationRecord(ROOT, ("read:data:*",), "2026-01-01T00:00:00Z", "ab")


@dataclass(frozen=True, slots=True)
class Token:
    """The smallest ClaimSet: what the rules read of a typed token."""

    exp: int = 1_060
    nbf: int = 1_000
    iat: int = 1_000
    iss: str = "tasklease"
    sub: str = LEAF
    aud: tuple[str, ...] = ("svc-a",)
    delegation_chain: tuple[DelegationRecord, ...] = ()
    chain_hash: str = ""
    principal: str = ""
    payload: dict[str, Any] = field(default_factory=dict)


def delegated(principal: str = "user:ada", **payload: Any) -> Token:
    return Token(
        delegation_chain=(HOP,),
        chain_hash=chain_hash((HOP,)),
        principal=principal,
        payload=payload,
    )


def outcome(
    token: Token,
    now: float = 1_010,
    *,
    skew: float = 5,
    exp_leeway: float = 0,
    audiences: tuple[str, ...] | None = ("svc-a",),
    max_lifetime: int = 3600,
) -> str | tuple[str, ...]:
    """The actors of an accepted token, or the reason it was refused."""
    try:
        return check_claims(
            token,
            token.payload,
            issuer="tasklease",
            audiences=audiences,
            now=now,
            skew=skew,
            max_lifetime=max_lifetime,
            max_depth=5,
            exp_leeway=exp_leeway,
        )
    except ClaimRejected as exc:
        return exc.reason


def time_outcome(token: Token, now: float, skew: float, exp_leeway: float = 0) -> str:
    try:
        check_time(token, now, skew, exp_leeway)
    except ClaimRejected as exc:
        return exc.reason
    return "ok"


# --- time -------------------------------------------------------------------------------


def test_a_token_is_dead_at_its_exp() -> None:
    """RFC 7519 section 4.1.4: not accepted "on or after" exp; no skew on exp."""
    token = Token(iat=1_000, nbf=1_000, exp=1_005)  # a 5 s token
    assert time_outcome(token, 1_004.999, skew=30) == "ok"
    for now in (1_005, 1_005.001, 1_007, 1_035):
        assert time_outcome(token, now, skew=30) == "token expired", now
        assert outcome(token, now, skew=30) == "token expired", now


def test_exp_leeway_is_only_what_a_verifier_configures() -> None:
    token = Token(iat=1_000, nbf=1_000, exp=1_005)
    assert time_outcome(token, 1_007, skew=30, exp_leeway=10) == "ok"
    assert outcome(token, 1_007, skew=30, exp_leeway=10) == ()
    assert time_outcome(token, 1_015, skew=30, exp_leeway=10) == "token expired"


def test_skew_applies_to_nbf_and_iat() -> None:
    future = Token(iat=1_020, nbf=1_020, exp=1_320)  # 20 s ahead of the clock at 1_000
    assert outcome(future, 1_000, skew=30) == ()
    assert outcome(future, 1_000, skew=19) == "token not yet valid"
    issued_ahead = Token(iat=1_020, nbf=1_000, exp=1_320)
    assert outcome(issued_ahead, 1_000, skew=30) == ()
    assert outcome(issued_ahead, 1_000, skew=19) == "token issued in the future"
    assert outcome(Token(iat=1_031, nbf=1_031, exp=1_100), 1_000, skew=30) == (
        "token not yet valid"
    )


_instants = st.integers(min_value=0, max_value=200)


@given(
    now=st.one_of(_instants, st.floats(min_value=0, max_value=200, allow_nan=False)),
    exp=_instants,
    nbf=_instants,
    iat=_instants,
    skew=st.integers(min_value=0, max_value=60),
    exp_leeway=st.integers(min_value=0, max_value=60),
)
def test_check_claims_decides_time_as_check_time(
    now: float, exp: int, nbf: int, iat: int, skew: int, exp_leeway: int
) -> None:
    """check_claims writes check_time's comparisons out (hot path): same answers."""
    token = Token(exp=exp, nbf=nbf, iat=iat)
    expected = time_outcome(token, now, skew, exp_leeway)
    got = outcome(token, now, skew=skew, exp_leeway=exp_leeway, max_lifetime=10_000)
    if expected == "ok":
        # Time passed: only the later rules (here the lifetime) may still refuse.
        assert got in ((), "token lifetime outside the allowed range")
        assert (got == ()) == (exp > iat)
    else:
        assert got == expected


# --- the other rules ----------------------------------------------------------------


def test_issuer_audience_and_lifetime() -> None:
    assert outcome(Token(iss="evil")) == "issuer mismatch"
    assert outcome(Token(aud=("svc-b",))) == "audience mismatch"
    assert outcome(Token(aud=("svc-b", "svc-a"))) == ()
    assert outcome(Token(aud=("svc-b",)), audiences=("svc-a", "svc-b")) == ()
    assert outcome(Token(aud=("svc-b",)), audiences=None) == ()
    assert outcome(Token(aud=()), audiences=None) == "empty audience"
    assert outcome(Token(aud=()), audiences=("svc-a",)) == "audience mismatch"
    assert outcome(Token(exp=1_060), max_lifetime=60) == ()
    assert outcome(Token(exp=1_061), max_lifetime=60) == "token lifetime outside the allowed range"
    # exp <= iat: refused even where the clock would let it through.
    assert outcome(Token(iat=1_020, nbf=1_000, exp=1_015), skew=30) == (
        "token lifetime outside the allowed range"
    )


def test_max_exp_bounds_exp_when_present() -> None:
    assert outcome(Token(exp=1_060, payload={"max_exp": 1_060})) == ()
    assert outcome(Token(exp=1_060, payload={"max_exp": 5_000})) == ()
    for bad in (1_059, None, "1060", 1_060.0, True):
        assert outcome(Token(exp=1_060, payload={"max_exp": bad})) == (
            "token outlives its lineage (exp after max_exp)"
        ), bad


def test_cnf_shape() -> None:
    assert well_formed_cnf({"jkt": "x"}) and well_formed_cnf({"x5t#S256": "a", "jkt": "b"})
    for bad in ({}, {"x5t": "a"}, {"jkt": ""}, {"jkt": 1}, [], "jkt"):
        assert not well_formed_cnf(bad), bad
        assert outcome(Token(payload={"cnf": bad})) == "cnf claim malformed"


def test_chain_and_act() -> None:
    # RFC 8693 section 4.1: sub is the subject acted for (the root delegator), act the
    # current actor (the holder); the principal is no actor.
    act = {"sub": LEAF}
    assert outcome(delegated(sub=ROOT, act=act)) == (LEAF,)
    assert outcome(delegated("", sub=ROOT, act=act)) == (LEAF,)
    assert act_claim(LEAF, (HOP,)) == act
    # The shape minted before (sub the holder, principal innermost) is read exactly.
    legacy = {"sub": LEAF, "act": {"sub": ROOT, "act": {"sub": "user:ada"}}}
    assert outcome(delegated(sub=LEAF, act=legacy)) == (LEAF, ROOT, "user:ada")
    assert outcome(delegated("", sub=LEAF)) == ()
    assert outcome(delegated("", sub=LEAF, act=None)) == ()
    assert outcome(delegated(sub=LEAF)) == "delegated token without an act claim"
    assert outcome(delegated(sub=ROOT, act=legacy)) == (
        "act chain disagrees with the delegation chain"
    )
    assert outcome(delegated(sub=LEAF, act=act)) == (
        "act chain disagrees with the delegation chain"
    )
    assert outcome(delegated(sub=ROOT, act={"sub": LEAF, "act": {"sub": ROOT}})) == (
        "act chain disagrees with the delegation chain"
    )
    assert outcome(delegated(sub=ROOT, act={"sub": ROOT})) == (
        "act chain disagrees with the delegation chain"
    )
    assert outcome(Token(payload={"act": {"sub": LEAF}})) == (
        "act claim on a token that is not delegated"
    )
    assert outcome(delegated(sub=ROOT, act={"sub": LEAF, "x": 1})) == (
        "act claim malformed or deeper than the limit"
    )
    assert outcome(dataclasses.replace(delegated(sub=ROOT, act=act), chain_hash="00")) == (
        "delegation chain hash mismatch"
    )
    assert outcome(dataclasses.replace(delegated(sub=ROOT, act=act), chain_hash="é")) == (
        "delegation chain hash mismatch"
    )
    assert outcome(Token(chain_hash="00")) == "chain_hash without a delegation chain"
    deep = dataclasses.replace(Token(), delegation_chain=(HOP,) * 6)
    assert outcome(dataclasses.replace(deep, chain_hash=chain_hash(deep.delegation_chain))) == (
        "delegation chain longer than the depth limit"
    )
    assert check_act(delegated(act=act), {"sub": ROOT, "act": act}, 5) == (LEAF,)


def test_act_claim_nests_earlier_actors() -> None:
    hops = tuple(DelegationRecord(f"spiffe://t/agent/{n}", (), "", "") for n in "abc")
    assert act_claim(LEAF, hops) == {
        "sub": LEAF,
        "act": {"sub": "spiffe://t/agent/c", "act": {"sub": "spiffe://t/agent/b"}},
    }
    assert holder_of({"sub": "spiffe://t/agent/a", "act": act_claim(LEAF, hops)}) == LEAF
    assert holder_of({"sub": LEAF}) == LEAF
    for bad in ({"sub": ""}, [], "x", {"act": {}}):
        with pytest.raises(ClaimRejected):
            holder_of({"sub": LEAF, "act": bad})


def test_act_actors_reads_iteratively_and_bounded() -> None:
    level: dict[str, Any] = {"sub": "user:ada"}
    for i in range(10_000):
        level = {"sub": f"a{i}", "act": level}
    assert act_actors(level, 7) is None
    assert act_actors({"sub": "a", "act": {"sub": "b"}}, 2) == ["a", "b"]
    assert act_actors({"sub": ""}, 2) is None


def test_chain_hash_and_records_match_the_brokers() -> None:
    from tasklease.core.tokens import DelegationRecord as BrokerRecord
    from tasklease.core.tokens import act_actors as broker_act_actors
    from tasklease.core.tokens import chain_hash as broker_chain_hash

    raw = [
        {"agent": agent, "scope": [scope], "delegated_at": at, "signature": signature}
        for agent, scope, at, signature in (
            (ROOT, "read:data:*", "2026-01-01T00:00:00Z", "ab"),
            (LEAF, "read:data:é", "2026-01-01T00:00:01Z", "cd"),
        )
    ]
    ours = delegation_chain_of(raw)
    theirs = tuple(BrokerRecord(r.agent, r.scope, r.delegated_at, r.signature) for r in ours)
    assert chain_hash(ours) == broker_chain_hash(theirs) == chain_hash(theirs)
    assert [r.as_json() for r in ours] == raw
    act = {"sub": LEAF, "act": {"sub": ROOT, "act": {"sub": "user:ada"}}}
    assert act_actors(act, 4) == broker_act_actors(act, 4)
    for bad, reason in (
        ({}, "claim delegation_chain is not a list"),
        (["x"], "delegation record is not an object"),
        ([{**raw[0], "agent": ""}], "claim agent missing or not a string"),
        ([{**raw[0], "scope": "read:data:*"}], "claim scope missing or not a list of strings"),
    ):
        with pytest.raises(ClaimRejected) as caught:
            delegation_chain_of(bad)
        assert caught.value.reason == reason


# --- lineage --------------------------------------------------------------------------


@given(
    st.one_of(
        st.lists(st.text(max_size=3), max_size=MAX_LINEAGE + 2),
        st.lists(st.one_of(st.text(min_size=1), st.integers(), st.none()), max_size=4),
        st.none(),
        st.text(),
        st.dictionaries(st.text(), st.text(), max_size=2),
    )
)
def test_lineage_is_a_short_list_of_non_empty_strings(value: object) -> None:
    well_formed = (
        type(value) is list
        and len(value) <= MAX_LINEAGE
        and all(type(v) is str and v for v in value)
    )
    if well_formed:
        assert lineage_of(value) == tuple(value)  # type: ignore[arg-type]
    else:
        with pytest.raises(ClaimRejected) as caught:
            lineage_of(value)
        assert caught.value.reason == "claim lineage malformed or longer than the limit"


def test_lineage_limit_is_the_brokers() -> None:
    from tasklease.core.tokens import ClaimsError, claims_from_payload

    base = {
        "iss": "tasklease", "sub": "s", "aud": ["a"], "exp": 2, "nbf": 1, "iat": 1,
        "jti": "j", "scope": [], "client_id": "c",
    }  # fmt: skip
    ids = [f"id-{i}" for i in range(MAX_LINEAGE + 1)]
    assert claims_from_payload("at+jwt", {**base, "lineage": ids[:-1]}).lineage == lineage_of(
        ids[:-1]
    )
    with pytest.raises(ClaimsError):
        claims_from_payload("at+jwt", {**base, "lineage": ids})
    with pytest.raises(ClaimRejected):
        lineage_of(ids)


# Would fail if: an exp no float holds met a verifier's float leeway by addition, which
# raises OverflowError instead of answering.
def test_an_exp_no_float_holds_is_compared_under_any_leeway() -> None:
    assert not is_expired(10**400, 1_900_000_000.0, 0.5)
    assert is_expired(-(10**400), 1_900_000_000.0, 0.5)
    assert is_expired(100, 100.0) and not is_expired(101, 100.0)


# Would fail if: the depth limit refused a chain of exactly max_depth hops (the limit is
# the most hops a token may carry, not one fewer).
def test_a_chain_of_exactly_the_depth_limit_is_accepted() -> None:
    hops = tuple(
        DelegationRecord(f"spiffe://t/agent/{n}", ("read:data:*",), "", "") for n in "abcde"
    )
    act = act_claim(LEAF, hops)
    token = Token(
        delegation_chain=hops,
        chain_hash=chain_hash(hops),
        principal="user:ada",
        payload={"sub": hops[0].agent, "act": act},
    )
    assert outcome(token) == (LEAF, *(hop.agent for hop in reversed(hops[1:])))
    longer = (*hops, DelegationRecord("spiffe://t/agent/f", ("read:data:*",), "", ""))
    assert outcome(
        dataclasses.replace(token, delegation_chain=longer, chain_hash=chain_hash(longer))
    ) == ("delegation chain longer than the depth limit")


# Would fail if: a delegated token without an act claim were read as the earlier shape
# whenever it names no principal, whoever its sub names: the earlier shape's sub is the
# holder, so a sub naming anyone else is refused.
def test_a_delegated_token_without_act_must_name_its_holder_as_sub() -> None:
    assert outcome(delegated("", sub=LEAF)) == ()
    for subject in (ROOT, "spiffe://t/agent/other"):
        assert outcome(delegated("", sub=subject)) == "delegated token without an act claim"


# Would fail if: act_actors read one level more than its limit.
def test_act_actors_refuses_one_level_past_the_limit() -> None:
    three = {"sub": "a", "act": {"sub": "b", "act": {"sub": "c"}}}
    assert act_actors(three, 3) == ["a", "b", "c"]
    assert act_actors(three, 2) is None


def test_the_chain_hash_is_gos_serialisation_and_the_older_one_still_names_the_chain() -> None:
    """AgentWrit hashes a chain as Go serialises it, ``&``, ``<`` and ``>`` escaped; a
    token minted before with them written as themselves names the same chain and still
    passes, and nothing else does."""
    import hashlib

    hop = DelegationRecord(ROOT, ("read:data:a&b<c>",), "2026-01-01T00:00:00Z", "ab")
    go = (
        b'[{"agent":"spiffe://t/agent/root","scope":["read:data:a\\u0026b\\u003cc\\u003e"],'
        b'"delegated_at":"2026-01-01T00:00:00Z","signature":"ab"}]'
    )
    older = go.replace(b"\\u0026", b"&").replace(b"\\u003c", b"<").replace(b"\\u003e", b">")
    assert chain_hash((hop,)) == hashlib.sha256(go).hexdigest()
    token = dataclasses.replace(delegated(sub=ROOT, act={"sub": LEAF}), delegation_chain=(hop,))
    accepted = outcome(dataclasses.replace(token, chain_hash=chain_hash((hop,))))
    assert accepted == (LEAF,)
    assert outcome(dataclasses.replace(token, chain_hash=hashlib.sha256(older).hexdigest())) == (
        accepted
    )
    for wrong in (hashlib.sha256(older + b" ").hexdigest(), chain_hash((HOP,))):
        assert outcome(dataclasses.replace(token, chain_hash=wrong)) == (
            "delegation chain hash mismatch"
        )
    # Without a character Go escapes, both ways are the same bytes.
    plain = (
        b'[{"agent":"spiffe://t/agent/root","scope":["read:data:*"],'
        b'"delegated_at":"2026-01-01T00:00:00Z","signature":"ab"}]'
    )
    assert chain_hash((HOP,)) == hashlib.sha256(plain).hexdigest()


# Would fail if: check_act let a holder appear in its own delegation chain (a token whose
# act chain is otherwise exactly what its chain implies, but that delegates back to a
# delegator: the broker never mints one, a foreign or forged issuer could).
def test_a_holder_that_is_in_its_own_delegation_chain_is_refused() -> None:
    mid = "spiffe://t/agent/mid"
    cycle = "act chain disagrees with the delegation chain"
    one = Token(
        sub=ROOT,
        delegation_chain=(HOP,),
        chain_hash=chain_hash((HOP,)),
        payload={"sub": ROOT, "act": {"sub": ROOT}},
    )
    assert outcome(one) == cycle
    hops = (HOP, DelegationRecord(mid, ("read:data:*",), "2026-01-01T00:00:01Z", "cd"))
    back = Token(
        sub=ROOT,
        delegation_chain=hops,
        chain_hash=chain_hash(hops),
        payload={"sub": ROOT, "act": {"sub": ROOT, "act": {"sub": mid}}},
    )
    assert outcome(back) == cycle
    # The same shape with a fresh holder is accepted: the refusal is the cycle's.
    fresh = dataclasses.replace(
        back, sub=LEAF, payload={"sub": ROOT, "act": {"sub": LEAF, "act": {"sub": mid}}}
    )
    assert outcome(fresh) == (LEAF, mid)
