"""Token ids carrying our MAC (core.tokenids): what a peer cannot make up."""

from __future__ import annotations

import re

from tasklease.core.identity import NonceIssuer
from tasklease.core.tokenids import JTI_HEX_CHARS, TokenIds, token_id_label

KEY = b"k" * 32


def test_a_minted_id_is_48_lowercase_hex_and_ours() -> None:
    ids = TokenIds(KEY)
    jti = ids.new()
    assert JTI_HEX_CHARS == 48
    assert re.fullmatch(r"[0-9a-f]{48}", jti)
    assert ids.ours(jti)
    assert jti != ids.new()


def test_an_id_under_another_key_or_altered_is_not_ours() -> None:
    ids, other = TokenIds(KEY), TokenIds(b"o" * 32)
    jti = ids.new()
    assert not other.ours(jti)
    flipped = jti[:-1] + ("0" if jti[-1] != "0" else "1")
    assert not ids.ours(flipped)
    body = jti[:32]
    assert not ids.ours(body)  # an id of the old shape (32 hex) is not recognised
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
