"""Token ids carrying our MAC (core.tokenids): what a peer cannot make up."""

from __future__ import annotations

import re

from tasklease.core.identity import NonceIssuer
from tasklease.core.tokenids import JTI_HEX_CHARS, TokenIds, token_id_label

KEY = b"k" * 32


def test_a_minted_id_is_32_lowercase_hex_and_ours() -> None:
    ids = TokenIds(KEY)
    jti = ids.new()
    assert JTI_HEX_CHARS == 32  # the shape of AgentWrit's jti
    assert re.fullmatch(r"[0-9a-f]{32}", jti)
    assert ids.ours(jti)
    assert jti != ids.new()


def test_an_id_under_another_key_or_altered_is_not_ours() -> None:
    ids, other = TokenIds(KEY), TokenIds(b"o" * 32)
    jti = ids.new()
    assert not other.ours(jti)
    flipped = jti[:-1] + ("0" if jti[-1] != "0" else "1")
    assert not ids.ours(flipped)
    assert not ids.ours(jti[:20] + "0" * 12)  # all random, as ids before the MAC were
    assert not ids.ours(jti.upper())
    assert not ids.ours(jti + "0")
    assert not ids.ours("made-up")


def test_the_key_differs_by_secret_and_by_trust_domain() -> None:
    def ids(secret: bytes, domain: str) -> TokenIds:
        return TokenIds(NonceIssuer(secret, 60).derived_key(token_id_label(domain)))

    jti = ids(b"x" * 32, "b.example").new()
    assert ids(b"x" * 32, "b.example").ours(jti)  # another replica sharing the secret
    assert not ids(b"y" * 32, "b.example").ours(jti)
    assert not ids(b"x" * 32, "a.example").ours(jti)
