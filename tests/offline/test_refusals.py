"""Every refusal of an offline chain, each by the check that owns it."""

from __future__ import annotations

import json
from typing import Any

import pytest
from offline_support import (
    BROKER_KID,
    HTU,
    NOW,
    agent_id,
    hops,
    key,
    nested,
    presented,
    proof,
    public,
    raw_block,
    root_token,
    verify,
)

from tasklease.core.revocation import RevocationIndex
from tasklease.core.store import RevocationRecord
from tasklease.rules import jws
from tasklease.rules.attenuation import PREFIX, decode
from tasklease.rules.binding import DPoPVerifier, Presentation
from tasklease.rules.chainverify import ChainRejected, recheck

NAMES = ("root", "b1", "b2", "b3")
ROOT = root_token(holder="root")
# Each holder's name in the chain through NAMES: each delegate's nested under its delegator's.
NAME = {n: nested(*NAMES[: i + 1]) for i, n in enumerate(NAMES)} | {"x": nested(*NAMES[:3], "x")}


def refused(chain: str, holder: str, category: str, reason: str = "", **kwargs: Any) -> None:
    with pytest.raises(ChainRejected) as caught:
        verify(chain, holder=holder, **kwargs)
    assert caught.value.category == category, caught.value.reason
    assert reason in caught.value.reason, caught.value.reason


def block(**fields: Any) -> dict[str, Any]:
    """A block's fields: b1 for 600 s, depth 1, unless told otherwise."""
    base: dict[str, Any] = {
        "sub": NAME["b1"],
        "key": public("b1"),
        "exp": NOW + 600,
        "iat": NOW,
        "jti": "1" * 32,
        "depth": 1,
    }
    return base | fields


def test_an_honest_chain_verifies() -> None:
    verified = verify(hops(NAMES), holder="b3")
    assert verified.holder == NAME["b3"] and verified.depth == 3


# --- attenuation: the issuance check decides every block ------------------------------


def test_a_widened_scope_is_refused() -> None:
    chain = raw_block(ROOT, "root", **block(scope=("delete:orders:42",)))
    refused(chain, "b1", "attenuation", "scope")


def test_a_scope_widened_back_after_a_narrowing_is_refused() -> None:
    narrowed = hops(NAMES[:2], scope=["read:orders:42"])
    chain = raw_block(
        narrowed,
        "b1",
        **block(sub=NAME["b2"], key=public("b2"), depth=2, jti="2" * 32, scope=("read:orders:*",)),
    )
    refused(chain, "b2", "attenuation", "scope")


def test_a_widened_grant_is_refused() -> None:
    pay = {
        "type": "resource_access",
        "actions": ["pay"],
        "locations": ["https://pay.example/payees/P"],
        "limits": {"max_amount": "100", "currency": "EUR"},
    }
    root = root_token(holder="root", details=[pay])
    more = dict(pay, limits={"max_amount": "600", "currency": "EUR"})
    refused(raw_block(root, "root", **block(grants=(more,))), "b1", "attenuation", "grants")
    other = dict(pay, locations=["https://pay.example/payees/Q"])
    refused(raw_block(root, "root", **block(grants=(other,))), "b1", "attenuation", "grants")


def test_a_widened_audience_is_refused() -> None:
    chain = raw_block(ROOT, "root", **block(aud="https://payments.example"))
    refused(chain, "b1", "attenuation", "audience", audiences=None)
    narrowed = hops(NAMES[:2], audience="https://billing.example")
    back = raw_block(
        narrowed,
        "b1",
        **block(
            sub=NAME["b2"],
            key=public("b2"),
            depth=2,
            jti="2" * 32,
            aud="https://orders.example",
        ),
    )
    refused(back, "b2", "attenuation", "audience", audiences=None)


def test_an_exp_past_the_parent_is_refused() -> None:
    refused(raw_block(ROOT, "root", **block(exp=NOW + 901)), "b1", "attenuation", "exp")
    first = hops(NAMES[:2], ttl=300)
    later = raw_block(
        first,
        "b1",
        **block(sub=NAME["b2"], key=public("b2"), depth=2, jti="2" * 32, exp=NOW + 301),
    )
    refused(later, "b2", "attenuation", "exp")


def test_the_depth_limit_is_the_kernels() -> None:
    chain = hops(NAMES)
    verify(chain, holder="b3", depth=3)
    refused(chain, "b3", "depth", "depth", depth=2)


def test_an_agent_cannot_come_back_into_the_chain() -> None:
    # Every name is nested under the one before, so none can come back: naming the root
    # holder again is refused as a name that is not the delegator's to give.
    chain = hops(("root", "b1", "b2"))
    cycle = raw_block(
        chain, "b2", **block(sub=agent_id("root"), key=public("root"), depth=3, jti="3" * 32)
    )
    refused(cycle, "root", "attenuation", "nested")


def test_a_wrong_depth_counter_is_refused() -> None:
    refused(raw_block(ROOT, "root", **block(depth=2)), "b1", "format", "depth")


def test_an_exp_not_after_iat_is_refused() -> None:
    refused(raw_block(ROOT, "root", **block(exp=NOW)), "b1", "attenuation")


# --- signatures and structure -----------------------------------------------------------


def test_a_block_signed_by_another_key_than_the_holders_is_refused() -> None:
    refused(raw_block(ROOT, "b1", **block()), "b1", "signature", "block 1")
    chain = hops(NAMES[:2])
    skipped = raw_block(
        chain, "root", **block(sub=NAME["b2"], key=public("b2"), depth=2, jti="2" * 32)
    )
    refused(skipped, "b2", "signature", "block 2")


def test_a_tampered_block_is_refused() -> None:
    chain = hops(NAMES)
    parts = chain.split("~")
    payload_text, signature = parts[2].split(".")
    fields = json.loads(jws.b64url_decode(payload_text))
    fields["exp"] -= 1  # even a narrowing breaks the signature
    text = jws.b64url_encode(json.dumps(fields, separators=(",", ":"), sort_keys=True).encode())
    parts[2] = f"{text}.{signature}"
    refused("~".join(parts), "b3", "signature", "block 1")


def test_reordered_or_removed_blocks_are_refused() -> None:
    parts = hops(NAMES).split("~")
    swapped = [*parts[:2], parts[3], parts[2], parts[4]]
    refused("~".join(swapped), "b3", "signature")
    removed = [*parts[:2], parts[3], parts[4]]
    refused("~".join(removed), "b3", "signature")
    first_dropped = [*parts[:2], *parts[3:]]
    refused("~".join(first_dropped), "b3", "signature")


def test_a_block_grafted_onto_another_root_is_refused() -> None:
    other_root = root_token(holder="root", jti="b" * 32)
    block_text = hops(NAMES[:2]).split("~")[2]
    refused("~".join((PREFIX[:-1], other_root, block_text)), "b1", "signature")


def test_a_root_not_signed_by_the_broker_is_refused() -> None:
    forged = root_token(holder="root", signer=key("mallory"))
    refused(hops(NAMES[:2], root=forged), "b1", "signature", "bad signature")
    unknown = root_token(holder="root", signer=key("mallory"), kid="mallory")
    refused(hops(NAMES[:2], root=unknown), "b1", "signature", "unknown kid")


def _root_with_header(header: dict[str, Any]) -> str:
    real = ROOT.split(".")
    head = jws.b64url_encode(json.dumps(header, separators=(",", ":")).encode())
    signature = key("broker").sign(f"{head}.{real[1]}".encode()).signature
    return f"{head}.{real[1]}.{jws.b64url_encode(signature)}"


@pytest.mark.parametrize("alg", ["none", "HS256", "ES256", "Ed25519"])
def test_a_root_whose_alg_is_not_eddsa_is_refused(alg: str) -> None:
    root = _root_with_header({"alg": alg, "typ": "at+jwt", "kid": BROKER_KID})
    chain = raw_block(root, "root", **block())
    refused(chain, "b1", "signature", "alg")


def test_a_root_of_another_kind_is_refused() -> None:
    root = _root_with_header({"alg": "EdDSA", "typ": "dpop+jwt", "kid": BROKER_KID})
    refused(raw_block(root, "root", **block()), "b1", "signature", "typ")


def test_a_root_without_a_holder_key_cannot_be_attenuated() -> None:
    root = root_token(holder="root", extra={"agent_jwk": None})
    chain = PREFIX + root + "~" + hops(NAMES[:2]).split("~")[2]
    refused(chain, "b1", "holder", "agent_jwk")


def test_a_root_from_another_issuer_is_refused() -> None:
    root = root_token(holder="root", extra={"iss": "elsewhere"})
    refused(hops(NAMES[:2], root=root), "b1", "issuer")


# --- time -------------------------------------------------------------------------------


def test_a_chain_is_dead_at_its_last_blocks_exp_with_no_leeway() -> None:
    chain = hops(NAMES[:2], ttl=300)
    verify(chain, holder="b1", now=NOW + 299)
    refused(chain, "b1", "expired", now=NOW + 300)


def test_a_chain_is_dead_when_its_root_is() -> None:
    chain = hops(NAMES[:2])
    refused(chain, "b1", "expired", "root", now=NOW + 900)


def test_a_block_issued_ahead_is_refused_beyond_the_skew() -> None:
    ahead = raw_block(ROOT, "root", **block(iat=NOW + 100, exp=NOW + 600))
    verify(ahead, holder="b1", now=NOW + 71)  # within 30 s of its iat
    refused(ahead, "b1", "not_yet_valid", now=NOW + 69)


def test_a_remembered_chain_is_not_yet_valid_again_when_the_clock_goes_back() -> None:
    """A verifier that remembers a chain rechecks its times at every use: the root's
    ``nbf`` and each block's ``iat``, within the skew, as at its first use."""
    remembered = verify(hops(NAMES[:2]), holder="b1")
    recheck(remembered, now=NOW - 30, skew=30, revoked=None)  # within the skew
    with pytest.raises(ChainRejected) as caught:
        recheck(remembered, now=NOW - 31, skew=30, revoked=None)
    assert caught.value.category == "not_yet_valid", caught.value.reason
    assert caught.value.reason.startswith("root"), caught.value.reason
    ahead = verify(
        raw_block(ROOT, "root", **block(iat=NOW + 100, exp=NOW + 600)), holder="b1", now=NOW + 71
    )
    recheck(ahead, now=NOW + 70, skew=30, revoked=None)
    with pytest.raises(ChainRejected) as caught:
        recheck(ahead, now=NOW + 69, skew=30, revoked=None)  # the root is valid, its block not
    assert caught.value.category == "not_yet_valid", caught.value.reason
    assert not caught.value.reason.startswith("root"), caught.value.reason


def test_a_block_dated_before_its_parent_is_refused() -> None:
    early = raw_block(ROOT, "root", **block(iat=NOW - 31))
    refused(early, "b1", "claims", "before its parent")


def test_the_effective_audience_must_be_this_resources() -> None:
    chain = hops(NAMES[:2], audience="https://billing.example")
    refused(chain, "b1", "audience")


# --- revocation of every element --------------------------------------------------------

CHAIN = hops(NAMES)
JTIS = ["a" * 32, f"{1:032x}", f"{2:032x}", f"{3:032x}"]


def _index(level: str, target: str, revoked_at: int = NOW) -> RevocationIndex:
    index = RevocationIndex()
    index.apply([RevocationRecord(level, target, revoked_at, NOW + 10_000)])
    return index


@pytest.mark.parametrize("jti", JTIS)
def test_a_revoked_jti_anywhere_in_the_chain_refuses_it(jti: str) -> None:
    refused(CHAIN, "b3", "revoked", jti, revoked=_index("token", jti).match)


@pytest.mark.parametrize("name", NAMES)
def test_a_revoked_agent_anywhere_in_the_chain_refuses_it(name: str) -> None:
    refused(CHAIN, "b3", "revoked", revoked=_index("agent", NAME[name]).match)


@pytest.mark.parametrize("jti", JTIS[:3])
def test_ending_a_level_ends_every_block_below_it(jti: str) -> None:
    refused(CHAIN, "b3", "revoked", revoked=_index("chain", jti).match)


def test_a_revoked_task_or_app_refuses_the_chain() -> None:
    refused(CHAIN, "b3", "revoked", revoked=_index("task", "task-42").match)
    refused(CHAIN, "b3", "revoked", revoked=_index("chain", "app:app-1").match)


def test_an_agent_revoked_before_it_handed_on_cannot_hand_on_later() -> None:
    # b1 is revoked; b2 (not revoked) dates its own block after the revocation: b1's own
    # block, issued before, still matches.
    late = raw_block(
        hops(NAMES[:3]),
        "b2",
        **block(sub=NAME["x"], key=public("x"), iat=NOW + 20, depth=3, jti="9" * 32),
    )
    refused(late, "x", "revoked", now=NOW + 21, revoked=_index("agent", NAME["b1"], NOW + 10).match)


def test_a_block_made_for_an_agent_already_revoked_is_refused() -> None:
    # Online, the broker refuses to delegate to a revoked agent; offline, the verifier
    # refuses a block naming one, whenever the block was made.
    late = raw_block(
        hops(NAMES[:3]), "b2",
        **block(sub=NAME["x"], key=public("x"), iat=NOW + 20, depth=3, jti="9" * 32),
    )  # fmt: skip
    refused(late, "x", "revoked", now=NOW + 21, revoked=_index("agent", NAME["x"]).match)
    # A chain-level entry on the delegate ends what it hands on, not its own block.
    verify(late, holder="x", now=NOW + 21, revoked=_index("chain", NAME["x"]).match)


def test_a_delegate_revoked_before_the_root_was_registered_is_refused() -> None:
    # The agent-level entry predates the root's registration (``oiat``), so the block's own
    # element does not match it; the delegate's standing does, whenever it was revoked.
    late = raw_block(
        hops(NAMES[:3]), "b2",
        **block(sub=NAME["x"], key=public("x"), iat=NOW + 20, depth=3, jti="9" * 32),
    )  # fmt: skip
    early = _index("agent", NAME["x"], NOW - 3600).match
    refused(late, "x", "revoked", NAME["x"], now=NOW + 21, revoked=early)


def test_unrelated_revocations_do_not_refuse_it() -> None:
    verify(CHAIN, holder="b3", revoked=_index("agent", agent_id("zz")).match)
    verify(CHAIN, holder="b3", revoked=_index("token", "f" * 32).match)


# --- the presenter's proof of possession ------------------------------------------------


def test_a_chain_presented_as_a_bearer_token_is_refused() -> None:
    refused(CHAIN, "b3", "binding", "bearer", presentation=Presentation())


def test_a_chain_without_its_proof_is_refused() -> None:
    bare = Presentation(scheme="DPoP", htm="GET", htu=HTU)
    refused(CHAIN, "b3", "binding", "missing", presentation=bare)


def test_a_proof_by_another_holder_of_the_chain_is_refused() -> None:
    for other in ("root", "b1", "b2", "mallory"):
        refused(CHAIN, "b3", "binding", "another key", presentation=presented(other, CHAIN))


def test_a_proof_for_another_chain_or_request_is_refused() -> None:
    shorter = hops(NAMES[:3])
    refused(CHAIN, "b3", "binding", "ath", presentation=presented("b3", shorter))
    wrong_url = Presentation(
        scheme="DPoP",
        dpop_proof=proof("b3", CHAIN, htu="https://else.example/"),
        htm="GET",
        htu=HTU,
    )
    refused(CHAIN, "b3", "binding", "htu", presentation=wrong_url)


def test_a_proof_is_single_use() -> None:
    ledger = DPoPVerifier(60)
    once = presented("b3", CHAIN)
    verify(CHAIN, holder="b3", presentation=once, dpop=ledger)
    refused(CHAIN, "b3", "binding", "replayed", presentation=once, dpop=ledger)


def test_decode_reads_what_verify_refuses() -> None:
    # The codec parses; only verification decides (a forged root still decodes).
    forged = hops(NAMES[:2], root=root_token(holder="root", signer=key("mallory")))
    assert decode(forged).blocks[0].sub == NAME["b1"]


@pytest.mark.parametrize(
    ("cnf", "category"), [(None, "binding"), ({}, "claims"), ({"unknown": "x"}, "claims")]
)
def test_a_bearer_root_starts_no_chain_and_no_verifier_accepts_one(
    cnf: object, category: str
) -> None:
    """The chain carries its root as issued: a bearer root, cut out, would be the root
    holder's whole authority to every delegate (decision 263). No holder derives from one,
    and a chain written on one by hand is refused before its blocks are read."""
    bearer = root_token(holder="root", extra={"cnf": cnf})
    with pytest.raises(ChainRejected) as caught:
        hops(("root", "b1"), root=bearer)
    assert caught.value.category == "binding" and "bearer" in caught.value.reason
    written = raw_block(
        PREFIX + bearer,
        "root",
        sub=nested("root", "b1"),
        key=public("b1"),
        exp=NOW + 60,
        iat=NOW,
        jti="1" * 32,
        depth=1,
    )
    # A verifier reads the root's claims first: a malformed cnf is refused there.
    refused(written, "b1", category)


def test_a_verified_chain_shows_no_credential_in_its_repr() -> None:
    """A resource server that logs what it verified writes no root token: the chain's
    text, which holds it, is left out of the repr."""
    chain = hops(("root", "b1"))
    verified = verify(chain, holder="b1")
    shown = repr(verified)
    assert "VerifiedChain(" in shown and verified.holder in shown
    assert chain not in shown and chain.split("~")[1] not in shown
