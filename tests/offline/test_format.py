"""The offline chain format: round trip, shapes refused, size at five hops and more."""

from __future__ import annotations

import json
from typing import Any

import pytest
from offline_support import NOW, hops, key, nested, public, raw_block, root_token, verify

from tasklease.rules import attenuation as fmt
from tasklease.rules.attenuation import ChainError, decode, is_chain
from tasklease.rules.chainverify import ChainRejected, derive
from tasklease.rules.jws import b64url_decode, b64url_encode

NAMES = ("root", "b1", "b2", "b3", "b4", "b5")
PAYMENT = {
    "type": "resource_access",
    "actions": ["pay"],
    "locations": ["https://pay.example/payees/P"],
    "limits": {
        "max_amount": "500",
        "currency": "EUR",
        "not_before": "2026-01-01T00:00:00Z",
        "not_after": "2026-01-01T23:59:59Z",
        "allowed_values": {"payee": ["P"]},
    },
}


def test_a_chain_round_trips_block_for_block() -> None:
    chain = hops(NAMES[:3], scope=["read:orders:42"], audience="https://orders.example")
    assert is_chain(chain) and chain.startswith("tla1~eyJ")
    decoded = decode(chain)
    assert decoded.root == root_token(holder="root")
    assert [b.sub for b in decoded.blocks] == [nested("root", "b1"), nested("root", "b1", "b2")]
    assert [b.key for b in decoded.blocks] == [public("b1"), public("b2")]
    first, second = decoded.blocks
    assert first.scope == ("read:orders:42",) and first.aud == "https://orders.example"
    assert second.scope is None and second.aud is None  # inherited, not repeated
    assert (first.depth, second.depth) == (1, 2)
    assert "~".join((fmt.PREFIX[:-1], decoded.root, first.text, second.text)) == chain
    payload = json.loads(b64url_decode(first.text.split(".")[0]))
    assert list(payload) == sorted(payload)  # canonical: sorted members


def test_derive_is_deterministic_for_fixed_inputs() -> None:
    assert hops(NAMES) == hops(NAMES)


def test_five_hops_with_typical_grants_fit_in_4_kb() -> None:
    # A registered agent's token with scopes and a payment grant (amount, currency, a day,
    # a payee); five offline hops: the first narrows scope, audience and amount, the
    # second the scope, the third the amount again, the last two hand on unchanged.
    chain = root_token(holder="root", details=[PAYMENT])
    asks: list[dict[str, object]] = [
        {"scope": ["read:orders:*"], "audience": "https://orders.example", "grants": [_pay("300")]},
        {"scope": ["read:orders:42"]},
        {"grants": [_pay("100")]},
        {},
        {},
    ]
    sizes = []
    for index, (giver, taker) in enumerate(zip(NAMES, NAMES[1:], strict=False)):
        chain = derive(
            chain,
            key(giver),
            delegate=nested(*NAMES[: index + 2]),
            delegate_key=public(taker),
            now=NOW,
            ttl=600,
            **asks[index],  # type: ignore[arg-type]
        )
        sizes.append(len(chain))
    assert len(decode(chain).blocks) == 5
    assert sizes[-1] <= fmt.MAX_CHAIN_BYTES, sizes
    # A block that hands on unchanged costs about 350 bytes; one that writes this grant
    # out about 750: a sixth plain hop would still fit.
    assert sizes[4] - sizes[3] < 400 and sizes[2] - sizes[1] < 800, sizes
    verified = verify(chain, holder="b5")
    assert verified.grants[0]["limits"]["max_amount"] == "100"
    assert verified.scope == ("read:orders:42",)


def _pay(amount: str) -> dict[str, object]:
    return dict(PAYMENT, limits={**PAYMENT["limits"], "max_amount": amount})


def test_a_grant_written_out_at_every_hop_hits_the_cap_before_four_hops() -> None:
    # The limit the format documents: the cap counts the whole chain.
    chain = root_token(holder="root", details=[PAYMENT])
    made = 0
    with pytest.raises(ChainError, match="exceed"):
        for index, (giver, taker) in enumerate(zip(NAMES, NAMES[1:], strict=False)):
            amount = str(400 - 50 * index)
            chain = derive(
                chain,
                key(giver),
                delegate=nested(*NAMES[: index + 2]),
                delegate_key=public(taker),
                now=NOW,
                ttl=600,
                grants=[_pay(amount)],
            )
            made += 1
    assert made == 3


def test_a_chain_over_the_size_cap_is_neither_made_nor_read() -> None:
    big = root_token(holder="root", extra={"padding": "x" * 2000})
    with pytest.raises(ChainError, match="exceed"):
        hops(("root", "b1", "b2", "b3"), root=big)
    with pytest.raises(ChainError, match="too large"):
        decode(fmt.PREFIX + "e" * fmt.MAX_CHAIN_BYTES)


def test_at_most_eight_blocks() -> None:
    names = [f"a{i}" for i in range(10)]
    with pytest.raises(ChainError):
        hops(names)


@pytest.mark.parametrize(
    ("mangle", "reason"),
    [
        (lambda c: c.replace("tla1~", "tla2~"), "prefix"),
        (lambda c: c + "~", "two segments"),
        (lambda c: c + "~abc", "two segments"),
        (lambda c: c[:-3] + "é" + c[-2:], "ASCII"),
        (lambda c: c.rsplit(".", 1)[0] + "." + b64url_encode(b"\0" * 63), "signature length"),
    ],
)
def test_malformed_chains_are_refused_by_the_codec(mangle: object, reason: str) -> None:
    chain = hops(NAMES[:2])
    with pytest.raises(ChainError, match=reason):
        decode(mangle(chain))  # type: ignore[operator]


def _payload_text(fields: dict[str, object], *, sort: bool = True) -> str:
    return b64url_encode(json.dumps(fields, separators=(",", ":"), sort_keys=sort).encode())


def test_a_payload_that_is_not_canonical_or_has_unknown_members_is_refused() -> None:
    chain = hops(NAMES[:2])
    good = decode(chain).blocks[0]
    fields = json.loads(good.payload)
    reordered = dict(reversed(list(fields.items())))
    for payload_text, reason in (
        (_payload_text(reordered, sort=False), "canonical"),
        (_payload_text({**fields, "extra": 1}), "members"),
        (_payload_text({k: v for k, v in fields.items() if k != "jti"}), "members"),
        (_payload_text({**fields, "exp": True}), "integer"),
        (_payload_text({**fields, "exp": 10**400}), "exp out of range"),
        (_payload_text({**fields, "iat": fmt.MAX_SECONDS + 1}), "iat out of range"),
        (_payload_text({**fields, "key": "AAAA"}), "key"),
        (_payload_text({**fields, "depth": 0}), "depth"),
        (_payload_text({**fields, "sub": "has space"}), "sub"),
        (_payload_text({**fields, "scope": "read:orders:42 read:orders:42"}), "twice"),
    ):
        text = chain.rsplit("~", 1)[0] + "~" + payload_text + "." + good.text.split(".")[1]
        with pytest.raises(ChainError, match=reason):
            decode(text)


def test_only_the_holder_can_derive() -> None:
    with pytest.raises(ChainError, match="holder"):
        derive(
            root_token(holder="root"),
            key("someone-else"),
            delegate=nested("root", "b1"),
            delegate_key=public("b1"),
            now=NOW,
            ttl=60,
        )


def test_derive_clamps_exp_to_the_parent_and_refuses_a_widening() -> None:
    chain = hops(NAMES[:2], ttl=10_000)  # asked for more than the root's 900 s
    assert decode(chain).blocks[0].exp == NOW + 900
    with pytest.raises(ChainError, match="exceeds"):
        hops(NAMES[:2], scope=["delete:orders:*"])


def test_a_hand_made_block_verifies_like_a_derived_one() -> None:
    chain = raw_block(
        root_token(holder="root"),
        "root",
        sub=nested("root", "b1"),
        key=public("b1"),
        exp=NOW + 600,
        iat=NOW,
        jti=f"{1:032x}",
        depth=1,
    )
    assert chain == hops(NAMES[:2])
    with pytest.raises(ChainRejected):
        verify(fmt.PREFIX + root_token(holder="root"), holder="root")  # no block at all


@pytest.mark.parametrize("jti", ["f" * 64, "tlr_" + "a" * 43])
def test_a_block_jti_shaped_like_a_secret_or_a_token_is_refused(jti: str) -> None:
    # The broker refuses such a revocation target, so a block with this id could not be ended.
    fields: dict[str, Any] = {
        "sub": nested("root", "b1"),
        "key": public("b1"),
        "exp": NOW + 600,
        "iat": NOW,
        "depth": 1,
    }
    assert fmt.block_payload(jti="f" * 63, **fields)  # one short of a secret's shape
    with pytest.raises(ChainError, match="secret or a token"):
        fmt.block_payload(jti=jti, **fields)


def test_a_holder_key_is_an_ed25519_okp_key_of_32_bytes() -> None:
    x = b64url_encode(public("b1"))
    good = {"kty": "OKP", "crv": "Ed25519", "x": x}
    assert fmt.holder_key_of({"agent_jwk": good}) == public("b1")
    assert fmt.holder_key_of({"agent_jwk": {**good, "crv": "X25519"}}) is None
    assert fmt.holder_key_of({"agent_jwk": {**good, "x": b64url_encode(b"k" * 31)}}) is None
    assert fmt.holder_key_of({"agent_jwk": {**good, "x": b64url_encode(b"k" * 33)}}) is None
