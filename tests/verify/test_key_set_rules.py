"""Which keys of a JWK Set the verifier uses, and how often a token can make it fetch the
set (verify._jwks): keys served from memory, a monotonic clock injected."""

from __future__ import annotations

from typing import Any

import httpx
import nacl.signing

from tasklease.rules import jws
from tasklease.verify._jwks import MAX_JWKS_BYTES, KeySet, parse_jwks


def _jwk(key: nacl.signing.SigningKey, **changes: Any) -> dict[str, Any]:
    raw = bytes(key.verify_key)
    jwk = {"kty": "OKP", "crv": "Ed25519", "kid": jws.jwk_thumbprint(raw)}
    jwk["x"] = jws.b64url_encode(raw)
    jwk.update(changes)
    return jwk


def test_only_signature_keys_under_their_thumbprint_are_used() -> None:
    good, other = nacl.signing.SigningKey.generate(), nacl.signing.SigningKey.generate()
    kid = jws.jwk_thumbprint(bytes(good.verify_key))
    assert list(parse_jwks({"keys": [_jwk(good)]})) == [kid]
    assert list(parse_jwks({"keys": [_jwk(good, alg="EdDSA", use="sig")]})) == [kid]
    refused = [
        _jwk(good, kid=jws.jwk_thumbprint(bytes(other.verify_key))),  # another key's kid
        _jwk(good, kid="k1"),  # a kid that is no thumbprint
        _jwk(good, use="enc"),
        _jwk(good, alg="ES256"),
    ]
    for jwk in refused:
        assert parse_jwks({"keys": [jwk]}) == {}, jwk


def _key_set(answer: Any, clock: list[float]) -> tuple[KeySet, httpx.Client]:
    client = httpx.Client(base_url="http://broker", transport=httpx.MockTransport(answer))
    return KeySet(client, ttl=300, min_interval=30, monotonic=lambda: clock[0]), client


def test_unknown_kids_cost_the_broker_one_fetch_per_interval() -> None:
    key = nacl.signing.SigningKey.generate()
    clock = [1000.0]
    keys, client = _key_set(lambda _r: httpx.Response(200, json={"keys": [_jwk(key)]}), clock)
    assert keys.refresh() and keys.fetches == 1
    assert keys.may_refresh()
    assert keys.resolve("invented-1") is None and keys.fetches == 2
    assert not keys.may_refresh()
    for n in range(5):
        assert keys.resolve(f"invented-{n + 2}") is None
        assert not keys.refresh_for_unknown_kid()
    assert keys.fetches == 2
    clock[0] += 30
    assert keys.may_refresh()
    assert keys.resolve("invented-9") is None and keys.fetches == 3
    client.close()


def test_an_oversized_key_set_is_a_failed_fetch_that_keeps_the_last_good_set() -> None:
    key = nacl.signing.SigningKey.generate()
    kid = jws.jwk_thumbprint(bytes(key.verify_key))
    served: list[dict[str, Any]] = [{"keys": [_jwk(key)]}]
    clock = [1000.0]
    keys, client = _key_set(lambda _r: httpx.Response(200, json=served[0]), clock)
    assert keys.refresh() and keys.kids == [kid]
    served[0] = {"keys": [], "padding": "x" * MAX_JWKS_BYTES}  # would drop the key
    assert not keys.refresh()
    assert keys.kids == [kid]
    client.close()
