"""Token ids carrying our MAC of a token's hop out (core.tokenids): what a peer can
neither make up nor reuse for another hop."""

from __future__ import annotations

import re
from typing import Any

import pytest

from tasklease.core.identity import NonceIssuer
from tasklease.core.tokenids import JTI_HEX_CHARS, TokenIds, crossings, hop, token_id_label
from tasklease.core.tokens import DelegationRecord

KEY = b"k" * 32
X = "spiffe://a.example/agent/o/t/x1"
RECORD = DelegationRecord(
    agent="spiffe://a.example/agent/o/t/x0",
    scope=("read:data:*",),
    delegated_at="2027-01-15T08:00:00Z",
    signature="00",
)
FIELDS: dict[str, Any] = {
    "holder": X,
    "scope": ("read:data:1",),
    "chain": (RECORD,),
    "task_id": "t-1",
    "principal": "user:alice@example.com",
    "domains": ("b.example",),
    "oiat": 1_800_000_000,
}
HOP = hop(**FIELDS)


def test_a_minted_id_is_32_lowercase_hex_and_vouches_for_its_hop() -> None:
    ids = TokenIds(KEY)
    jti = ids.new(HOP)
    assert JTI_HEX_CHARS == 32  # the shape of AgentWrit's jti
    assert re.fullmatch(r"[0-9a-f]{32}", jti)
    assert ids.vouches(jti, HOP)
    assert jti != ids.new(HOP)


def test_an_id_under_another_key_or_altered_vouches_for_nothing() -> None:
    ids, other = TokenIds(KEY), TokenIds(b"o" * 32)
    jti = ids.new(HOP)
    assert not other.vouches(jti, HOP)
    flipped = jti[:-1] + ("0" if jti[-1] != "0" else "1")
    assert not ids.vouches(flipped, HOP)
    assert not ids.vouches(jti[:20] + "0" * 12, HOP)  # all random, as ids before the MAC
    assert not ids.vouches(jti.upper(), HOP)
    assert not ids.vouches(jti + "0", HOP)
    assert not ids.vouches("made-up", HOP)
    assert not ids.vouches(jti, b"")


@pytest.mark.parametrize(
    "field, value",
    [
        ("holder", "spiffe://a.example/agent/o/t/x2"),
        ("scope", ("read:data:*",)),
        ("scope", ()),
        ("chain", ()),
        ("chain", ((RECORD.__class__(RECORD.agent, ("read:data:1",), RECORD.delegated_at, "")),)),
        ("chain", ((RECORD.__class__(RECORD.agent, RECORD.scope, "2027-01-15T08:00:01Z", "")),)),
        ("task_id", "t-2"),
        ("principal", "user:bob@example.com"),
        ("principal", ""),
        ("domains", ("c.example",)),
        ("domains", ("b.example", "c.example")),
        ("domains", ()),
        ("oiat", 1_800_000_001),
    ],
)
def test_an_id_vouches_for_no_other_hop(field: str, value: Any) -> None:
    """Every part of the hop counts: a peer that has seen the id cannot move it to another
    holder, scope, chain, task, principal, domain or lineage."""
    ids = TokenIds(KEY)
    jti = ids.new(HOP)
    assert not ids.vouches(jti, hop(**{**FIELDS, field: value}))


def test_the_hop_keeps_what_a_crossing_keeps() -> None:
    """A peer signs the chain's records again: their signatures are not part of the hop.
    A creator identity is renamed at each crossing: it counts as no human principal."""
    resigned = RECORD.__class__(RECORD.agent, RECORD.scope, RECORD.delegated_at, "ff" * 64)
    assert hop(**{**FIELDS, "chain": (resigned,)}) == HOP
    app_made = {**FIELDS, "principal": "app:app-1"}
    assert hop(**app_made) == hop(**{**FIELDS, "principal": "fed:a.example:app:app-1"})
    assert hop(**app_made) == hop(**{**FIELDS, "principal": ""})


def test_crossings_are_the_other_trust_domains_an_audience_names() -> None:
    aud = ("spiffe://c.example", "https://rs.b.example", "spiffe://b.example", "spiffe://a.example")
    assert crossings(aud, "a.example") == ("b.example", "c.example")
    assert crossings(("spiffe://b.example/agent/o/t/i", "tasklease"), "a.example") == ()
    assert crossings(("spiffe://B.example",), "a.example") == ()  # not a trust domain


def test_the_key_differs_by_secret_and_by_trust_domain() -> None:
    def ids(secret: bytes, domain: str) -> TokenIds:
        return TokenIds(NonceIssuer(secret, 60).derived_key(token_id_label(domain)))

    jti = ids(b"x" * 32, "b.example").new(HOP)
    assert ids(b"x" * 32, "b.example").vouches(jti, HOP)  # another replica sharing the secret
    assert not ids(b"y" * 32, "b.example").vouches(jti, HOP)
    assert not ids(b"x" * 32, "a.example").vouches(jti, HOP)
