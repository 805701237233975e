"""Registration: challenge-response, launch tokens, and nothing consumed by a bad request."""

from __future__ import annotations

import base64
import re
import threading
from typing import Any

import pytest

from tasklease.core.errors import (
    InvalidRequest,
    ScopeViolation,
    TaskleaseError,
    Unauthorized,
)
from tasklease.core.launch import launch_token_hash
from tasklease.core.store import AuditQuery
from tasklease.core.tokenids import hop
from tasklease.core.tokens import KIND_AGENT


def b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


SPIFFE = re.compile(r"^spiffe://tasklease\.local/agent/orch-1/task-1/[0-9a-f]{16}$")


def events(broker: Any, event_type: str) -> list[Any]:
    return broker.store.query_audit(AuditQuery(event_type=event_type, limit=1000))[0]


def consumed(broker: Any, launch_token: str) -> bool:
    record = broker.store.get_launch_token(launch_token_hash(launch_token))
    assert record is not None
    return record.consumed_at is not None


# --- happy path ----------------------------------------------------------------------------


def test_register_happy_path_claims(broker: Any, kit: Any, clock: Any) -> None:
    launch = kit.launch(broker, ["read:data:*", "write:logs:7"], max_ttl=120)
    args, key = kit.register_args(broker, launch, ["read:data:42", "write:logs:7"])
    issued = broker.register(**args)
    c = issued.claims
    assert SPIFFE.match(c.sub), c.sub
    assert c.kind == KIND_AGENT
    assert c.iss == "tasklease"
    assert c.aud == ("tasklease",)
    assert c.client_id == "admin"  # launch token created by the admin
    assert c.iat == int(clock.now())
    assert c.nbf == c.iat
    assert c.oiat == c.iat
    assert c.rnc == 0
    assert c.exp - c.iat == 120
    assert issued.expires_in == 120
    assert c.scope == ("read:data:42", "write:logs:7")
    assert (c.task_id, c.orch_id) == ("task-1", "orch-1")
    assert c.delegation_chain == ()
    assert c.chain_hash == ""
    assert re.fullmatch(r"[0-9a-f]{32}", c.jti)
    # An id carrying our MAC of the token's one hop out (core.tokenids): none here, as
    # its audience names no other trust domain.
    vouched = hop(
        holder=c.sub,
        scope=c.scope,
        chain=(),
        task_id="task-1",
        principal=c.principal,
        domains=(),
        oiat=c.oiat,
    )
    assert broker.kernel.token_ids.vouches(c.jti, vouched)
    # The token the caller gets carries exactly these claims.
    signed = broker.validate(issued.token)
    assert signed.raw == c.raw
    assert signed.raw["rnc"] == 0
    assert signed.raw["oiat"] == c.iat
    # The agent record holds the proven public key.
    agent = broker.store.get_agent(c.sub)
    assert agent is not None
    assert agent.public_key == bytes(key.verify_key)
    assert agent.scope == c.scope
    assert agent.status == "active"
    assert consumed(broker, launch)
    assert [e.agent_id for e in events(broker, "agent_registered")] == [c.sub]
    assert [e.agent_id for e in events(broker, "token_issued")] == [c.sub]


@pytest.mark.parametrize(
    ("launch_max_ttl", "config", "expected"),
    [
        (None, {}, 300),  # the default TTL
        (120, {}, 120),
        (7200, {}, 3600),  # clamped by max_ttl
        (7200, {"max_ttl": 600, "default_ttl": 60}, 600),
        (None, {"max_ttl": 600, "default_ttl": 60}, 60),
    ],
)
def test_register_ttl_is_launch_max_ttl_clamped(
    make_broker: Any, kit: Any, launch_max_ttl: int | None, config: dict[str, int], expected: int
) -> None:
    broker = make_broker(**config)
    launch = kit.launch(broker, max_ttl=launch_max_ttl)
    c = kit.register(broker, launch).claims
    assert c.exp - c.iat == expected


def test_trust_domain_is_used(make_broker: Any, kit: Any) -> None:
    broker = make_broker(trust_domain="example.org")
    sub = kit.register(broker, orch_id="o", task_id="t").sub
    assert re.fullmatch(r"spiffe://example\.org/agent/o/t/[0-9a-f]{16}", sub)


def test_each_registration_gets_a_new_identity(broker: Any, kit: Any) -> None:
    launch = kit.launch(broker, single_use=False)
    subs = {kit.register(broker, launch).sub for _ in range(5)}
    assert len(subs) == 5


def test_multi_use_launch_token_registers_several_agents(broker: Any, kit: Any) -> None:
    launch = kit.launch(broker, single_use=False)
    agents = [kit.register(broker, launch, task_id=f"task-{i}") for i in range(3)]
    assert [a.claims.task_id for a in agents] == ["task-0", "task-1", "task-2"]
    assert not consumed(broker, launch)


def test_single_use_launch_token_registers_one_agent(broker: Any, kit: Any) -> None:
    launch = kit.launch(broker)
    kit.register(broker, launch)
    args, _ = kit.register_args(broker, launch)
    with pytest.raises(Unauthorized):
        broker.register(**args)
    assert len(events(broker, "agent_registered")) == 1


# --- nothing consumed by a request that fails its own validation -----------------------------


# Fields a request can get wrong while its signature still proves the key: refused, such a
# request spends its nonce all the same (decision 262).
SIGNED_FIELDS = ("orch_id", "task_id", "requested_scope")


def assert_untouched(
    broker: Any, kit: Any, launch: str, nonce: str | None = None, *, spent: bool = False
) -> None:
    """The launch token is unconsumed and a retry works: with the refused request's
    nonce (if given), or, when the refusal ``spent`` it, only with a fresh one."""
    assert not consumed(broker, launch)
    if nonce is not None and spent:
        args, _ = kit.register_args(broker, launch, nonce=nonce)
        with pytest.raises(Unauthorized, match="nonce"):
            broker.register(**args)
        assert not consumed(broker, launch)
        nonce = None
    args, _ = kit.register_args(broker, launch, nonce=nonce)
    issued = broker.register(**args)
    assert SPIFFE.match(issued.claims.sub)
    assert consumed(broker, launch)


@pytest.mark.parametrize(
    "field",
    [
        "launch_token",
        "nonce",
        "public_key",
        "signature",
        "orch_id",
        "task_id",
        "requested_scope",
    ],
)
@pytest.mark.parametrize("value", [None, ""])
def test_missing_field_is_invalid_request(broker: Any, kit: Any, field: str, value: object) -> None:
    launch = kit.launch(broker)
    args, _ = kit.register_args(broker, launch)
    args[field] = value
    with pytest.raises(InvalidRequest) as info:
        broker.register(**args)
    assert field in info.value.detail
    assert_untouched(broker, kit, launch, nonce=args["nonce"] or None, spent=field in SIGNED_FIELDS)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("orch_id", "a/b"),
        ("orch_id", ".."),
        ("orch_id", "."),
        ("orch_id", "a b"),
        ("orch_id", "x" * 129),
        ("orch_id", 7),
        ("task_id", "a/b"),
        ("task_id", ".."),
        ("task_id", "spiffe://evil/agent"),
        ("task_id", "é"),
        ("requested_scope", ["read:data"]),
        ("requested_scope", "read:data:*"),
        ("requested_scope", ["read:data:4*"]),
        ("requested_scope", [None]),
        ("public_key", "not base64!"),
        ("public_key", "AAAA"),  # valid base64, 3 bytes
        ("public_key", "A" * 43),  # no padding
        ("signature", "AAAA"),
        ("signature", "%%%%"),
        ("nonce", "XYZ"),
        ("nonce", "A" * 64),  # upper case hex
    ],
)
def test_invalid_field_rejected_before_anything_is_consumed(
    broker: Any, kit: Any, field: str, value: object
) -> None:
    launch = kit.launch(broker)
    args, _ = kit.register_args(broker, launch)
    good_nonce = args["nonce"]
    args[field] = value
    with pytest.raises(InvalidRequest) as info:
        broker.register(**args)
    assert field in info.value.detail
    assert_untouched(broker, kit, launch, nonce=good_nonce, spent=field in SIGNED_FIELDS)


@pytest.mark.parametrize(
    ("field", "size"),
    [
        ("public_key", 31),
        ("public_key", 33),
        ("public_key", 64),
        ("signature", 63),
        ("signature", 65),
    ],
)
def test_wrong_key_or_signature_length(broker: Any, kit: Any, field: str, size: int) -> None:
    launch = kit.launch(broker)
    args, _ = kit.register_args(broker, launch)
    good_nonce = args["nonce"]
    args[field] = b64(b"\x01" * size)
    with pytest.raises(InvalidRequest, match=f"invalid {field}: expected .* got {size}"):
        broker.register(**args)
    assert_untouched(broker, kit, launch, nonce=good_nonce)


def test_base64url_is_not_standard_base64(broker: Any, kit: Any) -> None:
    launch = kit.launch(broker)
    args, _ = kit.register_args(broker, launch)
    # Make sure the encoding has a character that differs between the two alphabets.
    for _ in range(50):
        if "+" in args["signature"] or "/" in args["signature"]:
            break
        args, _ = kit.register_args(broker, launch)
    args["signature"] = args["signature"].replace("+", "-").replace("/", "_")
    with pytest.raises(InvalidRequest):
        broker.register(**args)
    assert not consumed(broker, launch)


def test_unknown_and_malformed_launch_tokens(broker: Any, kit: Any) -> None:
    launch = kit.launch(broker)
    args, _ = kit.register_args(broker, "ab" * 32)
    with pytest.raises(Unauthorized):
        broker.register(**args)
    fresh, _ = kit.register_args(broker, "not-a-launch-token")
    with pytest.raises(Unauthorized):
        broker.register(**fresh)
    # Each refusal spent its nonce (decision 262); the launch token is untouched.
    assert_untouched(broker, kit, launch, nonce=args["nonce"], spent=True)
    failed = events(broker, "registration_failed")
    assert any("launch token not found" in e.detail for e in failed)


def test_reused_launch_token_is_refused_and_spends_the_nonce(broker: Any, kit: Any) -> None:
    launch = kit.launch(broker)
    kit.register(broker, launch)
    args, _ = kit.register_args(broker, launch)
    with pytest.raises(Unauthorized) as info:
        broker.register(**args)
    assert "consumed" in info.value.detail
    # Its signature proves no other request (decision 262); a fresh nonce registers.
    assert_untouched(broker, kit, kit.launch(broker), nonce=args["nonce"], spent=True)


def test_reused_nonce_is_refused_and_leaves_launch_token_unconsumed(broker: Any, kit: Any) -> None:
    first_launch = kit.launch(broker)
    args, key = kit.register_args(broker, first_launch)
    broker.register(**args)
    launch = kit.launch(broker)
    replay = dict(args, launch_token=launch)
    with pytest.raises(Unauthorized) as info:
        broker.register(**replay)
    assert "nonce" in info.value.detail
    assert_untouched(broker, kit, launch)


def test_expired_launch_token(broker: Any, kit: Any, clock: Any) -> None:
    launch = kit.launch(broker, ttl=30)
    clock.advance(31)
    args, _ = kit.register_args(broker, launch)
    with pytest.raises(Unauthorized) as info:
        broker.register(**args)
    assert "expired" in info.value.detail
    assert not consumed(broker, launch)
    assert any("expired" in e.detail for e in events(broker, "registration_failed"))
    # The nonce is spent: with a live launch token only a fresh one registers.
    assert_untouched(broker, kit, kit.launch(broker), nonce=args["nonce"], spent=True)


def test_launch_token_at_its_last_second_still_works(broker: Any, kit: Any, clock: Any) -> None:
    launch = kit.launch(broker, ttl=30)
    clock.advance(29)
    assert kit.register(broker, launch).claims.sub


def test_expired_nonce(broker: Any, kit: Any, clock: Any) -> None:
    launch = kit.launch(broker, ttl=600)
    args, _ = kit.register_args(broker, launch)
    clock.advance(31)
    with pytest.raises(Unauthorized) as info:
        broker.register(**args)
    assert "nonce" in info.value.detail
    assert_untouched(broker, kit, launch)


def test_a_nonce_is_dead_at_its_expiry(broker: Any, kit: Any, clock: Any) -> None:
    early, late = kit.launch(broker, ttl=600), kit.launch(broker, ttl=600)
    early_args, _ = kit.register_args(broker, early)
    late_args, _ = kit.register_args(broker, late)
    clock.advance(broker.config.nonce_ttl - 1)  # its last second: still good
    assert broker.register(**early_args).claims.sub
    clock.advance(1)  # the instant of its expiry: dead
    with pytest.raises(Unauthorized) as info:
        broker.register(**late_args)
    assert "nonce" in info.value.detail
    assert_untouched(broker, kit, late)


def test_nonce_from_another_broker_secret_is_refused(broker: Any, kit: Any) -> None:
    from tasklease.core.identity import NonceIssuer

    launch = kit.launch(broker)
    foreign = NonceIssuer(b"y" * 32, 30).issue(broker.clock.now())
    args, _ = kit.register_args(broker, launch, nonce=foreign)
    with pytest.raises(Unauthorized):
        broker.register(**args)
    assert_untouched(broker, kit, launch)


def test_wrong_signature_burns_the_nonce_but_not_the_launch_token(broker: Any, kit: Any) -> None:
    from nacl.signing import SigningKey

    launch = kit.launch(broker)
    args, _ = kit.register_args(broker, launch)
    nonce = args["nonce"]
    # A valid signature by another key.
    intruder = SigningKey.generate()
    args["signature"] = kit.register_args(broker, launch, key=intruder, nonce=nonce)[0]["signature"]
    with pytest.raises(Unauthorized) as info:
        broker.register(**args)
    assert "signature" in info.value.detail
    assert not consumed(broker, launch)
    assert any(
        "signature verification failed" in e.detail for e in events(broker, "registration_failed")
    )
    # The same nonce, now correctly signed, is refused: it was burnt.
    retry, _ = kit.register_args(broker, launch, nonce=nonce)
    with pytest.raises(Unauthorized) as info:
        broker.register(**retry)
    assert "nonce" in info.value.detail
    assert_untouched(broker, kit, launch)


def test_signature_over_ascii_nonce_is_refused(broker: Any, kit: Any) -> None:
    """The signing input is the 32 hex-decoded bytes, not the 64 ASCII characters."""
    from nacl.signing import SigningKey

    launch = kit.launch(broker)
    key = SigningKey.generate()
    args, _ = kit.register_args(broker, launch, key=key)
    args["signature"] = b64(key.sign(args["nonce"].encode()).signature)
    with pytest.raises(Unauthorized):
        broker.register(**args)


def test_scope_not_covered_is_violation_and_consumes_nothing(broker: Any, kit: Any) -> None:
    launch = kit.launch(broker, ["read:data:1"])
    args, _ = kit.register_args(broker, launch, ["read:data:1", "write:data:1"])
    with pytest.raises(ScopeViolation):
        broker.register(**args)
    violations = events(broker, "registration_policy_violation")
    assert len(violations) == 1
    assert violations[0].outcome == "denied"
    assert "write:data:1" in violations[0].detail
    assert violations[0].task_id == "task-1"
    assert not consumed(broker, launch)
    # The nonce is spent with the refusal (decision 262); a fresh one registers.
    args["requested_scope"] = ["read:data:1"]
    with pytest.raises(Unauthorized, match="nonce"):
        broker.register(**args)
    again, _ = kit.register_args(broker, launch, ["read:data:1"])
    assert broker.register(**again).claims.scope == ("read:data:1",)


def test_wildcard_request_under_specific_ceiling_is_violation(broker: Any, kit: Any) -> None:
    launch = kit.launch(broker, ["read:data:1"])
    args, _ = kit.register_args(broker, launch, ["read:data:*"])
    with pytest.raises(ScopeViolation):
        broker.register(**args)
    assert not consumed(broker, launch)


def test_app_launch_token_sets_client_id(make_broker: Any, kit: Any) -> None:
    """Registration through an app's launch token carries the app's client_id."""
    broker = make_broker()
    app, _secret = broker.register_app(
        kit.admin(broker).claims,
        name="reporter",
        scopes=["read:data:*"],
        token_ttl=None,
        ctx=kit.ctx,
    )
    app_claims = kit.app(broker, app.app_id).claims
    launch, record = broker.create_launch_token(
        app_claims,
        agent_name="a",
        allowed_scope=["read:data:1"],
        max_ttl=None,
        single_use=None,
        ttl=None,
        ctx=kit.ctx,
    )
    assert record.app_id == app.app_id
    agent = kit.register(broker, launch, ["read:data:1"])
    assert agent.claims.client_id == app.client_id
    assert broker.store.get_agent(agent.sub).app_id == app.app_id


# --- concurrency ---------------------------------------------------------------------------


def test_twenty_threads_one_single_use_launch_token_one_winner(broker: Any, kit: Any) -> None:
    launch = kit.launch(broker)
    prepared = [kit.register_args(broker, launch)[0] for _ in range(20)]
    barrier = threading.Barrier(20)
    wins: list[Any] = []
    losses: list[BaseException] = []
    lock = threading.Lock()

    def attempt(args: dict[str, Any]) -> None:
        barrier.wait()
        try:
            issued = broker.register(**args)
        except TaskleaseError as exc:
            with lock:
                losses.append(exc)
        else:
            with lock:
                wins.append(issued)

    threads = [threading.Thread(target=attempt, args=(a,)) for a in prepared]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert len(wins) == 1
    assert len(losses) == 19
    assert all(isinstance(exc, Unauthorized) for exc in losses)
    assert len(events(broker, "agent_registered")) == 1
    assert consumed(broker, launch)


def test_launch_token_at_its_exact_expiry_is_refused_as_expired(
    broker: Any, kit: Any, clock: Any
) -> None:
    """The broker's expiry check and the store's consume must agree on the boundary.

    ``consume_launch_token`` treats a token as expired when ``expires_at <= now``; the
    broker must say "expired" then too, not let it through to fail as "already consumed".
    """
    launch = kit.launch(broker, ttl=30)
    clock.advance(30)
    args, _ = kit.register_args(broker, launch)
    with pytest.raises(Unauthorized) as info:
        broker.register(**args)
    assert "expired" in info.value.detail
    assert not consumed(broker, launch)
