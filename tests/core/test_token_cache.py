"""The validator's token cache (decision 122): what a token's text settles is remembered,
and every other check runs again at every use."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from tests.core.test_validation import agent_token

from tasklease.core.config import Config
from tasklease.core.keys import KeyRing, load_or_create_keyring, retire_keys
from tasklease.core.tokens import KIND_ADMIN, KIND_AGENT
from tasklease.core.validation import TokenRejected, Validator
from tasklease.keystore import PlaintextKeyProvider
from tasklease.rules import jws


@pytest.fixture
def verifications(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """One entry per Ed25519 verification of a token's signature."""
    calls: list[int] = []
    real = jws._verify_token_signature

    def counting(raw: bytes, length: int, signature: bytes, key: Any) -> bool:
        calls.append(length)
        return real(raw, length, signature, key)

    monkeypatch.setattr(jws, "_verify_token_signature", counting)
    return calls


def test_a_token_the_broker_signed_is_never_verified_again(
    broker: Any, kit: Any, verifications: list[int]
) -> None:
    agent = kit.register(broker)
    assert broker.validate(agent.token).jti == agent.claims.jti
    assert broker.validate(agent.token).jti == agent.claims.jti
    assert verifications == []
    # Its renewal is signed here too: presented, it is not verified either.
    renewed = broker.renew(broker.authenticate(kit.bearer(agent.token), kit.ctx), ctx=kit.ctx)
    assert broker.validate(renewed.token).jti == renewed.claims.jti
    assert verifications == []


def test_a_token_from_elsewhere_is_verified_once(broker: Any, verifications: list[int]) -> None:
    # Signed with the broker's ring but not by its services (as a token from another
    # worker sharing the key arrives): nothing remembers it before its first use.
    token = agent_token(broker)
    broker.validate(token)
    broker.validate(token)
    broker.validate(token)
    assert len(verifications) == 1
    counted = broker.metrics.registry.get_sample_value
    assert counted("tasklease_token_cache_total", {"result": "miss"}) == 1
    assert counted("tasklease_token_cache_total", {"result": "hit"}) == 2


def test_claims_remembered_at_signing_equal_the_verified_ones(
    make_broker: Any, kit: Any, keyring: KeyRing, clock: Any
) -> None:
    """A delegated token (chain, act, lineage, agent key) read from what was signed equals
    the same token verified from its text by a broker that never saw it."""
    broker = make_broker(keyring=keyring, clock=clock)
    other = make_broker(keyring=keyring, clock=clock, store=broker.store)
    first = kit.register(broker, scope=("read:data:*",))
    second = kit.register(broker, scope=("read:data:*",), task_id="task-2")
    delegated = broker.delegate(
        broker.authenticate(kit.bearer(first.token), kit.ctx),
        delegate_to=second.sub,
        scope=["read:data:1"],
        ttl=60,
        ctx=kit.ctx,
    )
    for token in (first.token, delegated.token):
        remembered, verified = broker.validate(token), other.validate(token)
        assert remembered == verified
        assert list(remembered.raw.items()) == list(verified.raw.items())
    assert broker.validate(delegated.token).delegation_chain


def test_a_token_whose_signature_fails_is_not_remembered(
    broker: Any, verifications: list[int]
) -> None:
    head, payload, signature = agent_token(broker).split(".")
    forged = f"{head}.{payload}.{signature[:-4]}AAAA"
    for _ in range(3):
        with pytest.raises(TokenRejected, match="bad signature"):
            broker.validate(forged)
    assert len(verifications) == 3


def test_a_changed_character_is_another_token(broker: Any, kit: Any) -> None:
    agent = kit.register(broker)
    broker.validate(agent.token)
    head, payload, signature = agent.token.split(".")
    flipped = signature[:10] + ("A" if signature[10] != "A" else "B") + signature[11:]
    with pytest.raises(TokenRejected, match="bad signature"):
        broker.validate(f"{head}.{payload}.{flipped}")
    other = agent_token(broker, scope=("write:data:1",))
    with pytest.raises(TokenRejected, match="bad signature"):
        broker.validate(f"{head}.{other.split('.')[1]}.{signature}")


def test_expiry_and_revocation_still_apply_at_every_use(broker: Any, kit: Any, clock: Any) -> None:
    agent = kit.register(broker)
    broker.validate(agent.token)
    clock.set(agent.claims.exp - 1)
    broker.validate(agent.token)
    clock.set(agent.claims.exp)  # dead at its expiry: no leeway, cached or not
    with pytest.raises(TokenRejected, match="expired"):
        broker.validate(agent.token)

    clock.set(agent.claims.iat)
    later = kit.register(broker, task_id="task-2")
    broker.validate(later.token)
    broker.revoke(kit.admin(broker).claims, level="token", target=later.claims.jti, ctx=kit.ctx)
    with pytest.raises(TokenRejected, match="revoked"):
        broker.validate(later.token)


def test_a_remembered_token_is_still_refused_where_its_type_is_not(broker: Any, kit: Any) -> None:
    agent = kit.register(broker)
    broker.validate(agent.token)
    with pytest.raises(TokenRejected, match="typ"):
        broker._keys.validator.validate(agent.token, (KIND_ADMIN,))


def test_a_token_too_large_is_refused_though_signed_here(make_broker: Any, kit: Any) -> None:
    broker = make_broker(max_token_bytes=600, reference_token_threshold=600)
    token = broker._keys.sign(b'{"pad":"' + b"x" * 700 + b'"}', KIND_AGENT)
    with pytest.raises(TokenRejected, match="too large"):
        broker.validate(token)


def test_tokens_with_a_critical_scope_are_verified_at_every_use(
    make_broker: Any, kit: Any, verifications: list[int]
) -> None:
    broker = make_broker(critical_scopes=("write:payments:*",))
    critical = kit.register(broker, scope=("write:payments:1",))
    plain = kit.register(broker, scope=("read:data:1",), task_id="task-2")
    for _ in range(3):
        broker.validate(critical.token)
        broker.validate(plain.token)
    assert len(verifications) == 3


def test_a_critical_scope_held_as_a_limited_grant_is_never_remembered(
    make_broker: Any, kit: Any, verifications: list[int]
) -> None:
    """The cache looked at the scope claim only, and a limited grant is never in it: both
    tokens here were remembered (no verification after the first use, none at all for the
    one signed here)."""
    broker = make_broker(critical_scopes=("write:payments:*",))
    grant = {"type": "scope", "scope": "write:payments:1", "limits": {"max_calls": 3}}
    args, _ = kit.register_args(broker, kit.launch(broker, ("write:payments:*",)), ())
    signed_here = broker.register(**args, authorization_details=[grant])
    assert signed_here.claims.scope == ()
    # Signed with the broker's ring by another worker, for the same agent.
    from_elsewhere = agent_token(broker, sub=signed_here.claims.sub, scope=(), details=(grant,))
    for _ in range(3):
        broker.validate(signed_here.token)
        broker.validate(from_elsewhere)
    assert len(verifications) == 6
    # A limited grant on another scope is remembered as before.
    ordinary = agent_token(broker, scope=(), details=({**grant, "scope": "read:data:1"},))
    for _ in range(3):
        broker.validate(ordinary)
    assert len(verifications) == 7


def test_a_retired_key_is_refused_even_for_a_token_remembered_under_it(
    make_broker: Any, kit: Any, tmp_path: Path
) -> None:
    """A token signed under a ring a rotation replaced (a hop in flight) and remembered by
    the new validator: once its key is retired, the remembered text no longer counts."""
    keys = tmp_path / "keys"
    ring = load_or_create_keyring(keys, PlaintextKeyProvider())
    broker = make_broker(keyring=ring, key_dir=str(keys))
    broker.rotate_signing_key(kit.admin(broker).claims, kit.ctx)
    retire_keys(keys, {broker.keyring.active_kid}, PlaintextKeyProvider())
    assert broker.refresh_keys() and ring.active_kid not in broker.keyring.kids()
    payload = b'{"scope":"read:data:1"}'
    token = broker._keys.signer(ring).sign(payload, KIND_AGENT)
    with pytest.raises(TokenRejected, match="unknown kid"):
        broker.validate(token)


def test_the_cache_is_bounded_and_can_be_turned_off(
    make_broker: Any, verifications: list[int]
) -> None:
    small = make_broker(token_cache_size=2)
    tokens = [agent_token(small, task_id=f"t{i}") for i in range(3)]
    for token in tokens:
        small.validate(token)
    small.validate(tokens[2])
    small.validate(tokens[1])
    assert len(verifications) == 3
    small.validate(tokens[0])  # the least recently used went first
    assert len(verifications) == 4

    verifications.clear()
    off = make_broker(token_cache_size=0)
    token = agent_token(off)
    for _ in range(3):
        off.validate(token)
    assert len(verifications) == 3


@pytest.mark.parametrize("size", [-1, 1_000_001])
def test_token_cache_size_out_of_range_is_refused(size: int) -> None:
    with pytest.raises(ValueError, match="token_cache_size"):
        Config(admin_secret_hash="x", token_cache_size=size)


def test_a_validator_answers_for_itself(broker: Any) -> None:
    """Built directly (no SigningKeys), a validator remembers only what it verified."""
    validator = Validator(
        broker.config, broker.keyring, broker.clock, broker.revocations, broker.metrics
    )
    token = agent_token(broker)
    assert validator.validate(token, (KIND_AGENT,)).kind == KIND_AGENT
