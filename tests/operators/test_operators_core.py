"""Named operators in the core, on an in-memory broker with a hand-driven clock: the
sign-in message, role scopes, the built-in admin, credential changes and their tokens."""

from __future__ import annotations

import base64
from pathlib import Path

import nacl.signing
import pytest

import tasklease.core.operators as operators_module
import tasklease.rules.jws as jws_module
from tasklease.core.broker import Broker, RequestContext
from tasklease.core.clock import ManualClock
from tasklease.core.config import Config
from tasklease.core.errors import (
    Conflict,
    InvalidRequest,
    NotFound,
    Unauthorized,
    Unavailable,
)
from tasklease.core.keys import KeyRing
from tasklease.core.operators import INIT, operator_name, operator_subject
from tasklease.core.passwords import hash_secret
from tasklease.core.store import AuditQuery
from tasklease.core.tokencheck import held_scopes
from tasklease.core.tokens import ADMIN_SCOPES, BUILTIN_ADMIN, KIND_ADMIN, ROLE_SCOPES, ROLES
from tasklease.rules.messages import operator_sign_in_input
from tasklease.storage import open_store

CTX = RequestContext(request_id="req-1", remote="127.0.0.1")
ADMIN_SECRET = "a" * 40


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(1_800_000_000.5)  # half a second in: "the same second" is testable


@pytest.fixture
def broker(clock: ManualClock) -> Broker:
    config = Config(admin_secret_hash=hash_secret(ADMIN_SECRET))
    return Broker(
        config, open_store("memory://"), KeyRing.generate(), clock=clock, nonce_secret=b"n" * 32
    )


def _builtin(broker: Broker) -> object:
    return broker.admin_auth(ADMIN_SECRET, CTX).claims


def _events(broker: Broker, event_type: str) -> list[str]:
    events, _ = broker.audit_events(AuditQuery(event_type=event_type, limit=1000))
    return [e.detail for e in events]


def test_the_sign_in_message_is_domain_separated_known_answer() -> None:
    nonce = "0f" * 32
    assert operator_sign_in_input("alice", nonce) == (
        b'tasklease-operator-v1\n["alice","' + nonce.encode() + b'"]'
    )
    # Never the bare nonce bytes an agent's registration proof signs.
    assert operator_sign_in_input("alice", nonce) != bytes.fromhex(nonce)


def test_role_scopes_and_the_builtin_admin() -> None:
    assert set(ROLES) == {"admin", "operator", "auditor"}
    assert ROLE_SCOPES["operator"] == ADMIN_SCOPES  # AgentWrit's admin token, exactly
    assert set(ROLE_SCOPES["admin"]) == {
        *ADMIN_SCOPES,
        "admin:operators:*",
        "admin:keys:*",
        "admin:tenants:*",
    }
    assert ROLE_SCOPES["auditor"] == ("admin:audit:*",)
    with pytest.raises(TypeError):
        ROLE_SCOPES["auditor"] = ADMIN_SCOPES  # type: ignore[index]
    assert BUILTIN_ADMIN == "admin" and operator_subject("admin") == "operator:admin"


def test_builtin_admin_keeps_agentwrit_claims_and_holds_the_admin_role(broker: Broker) -> None:
    claims = broker.admin_auth(ADMIN_SECRET, CTX).claims
    assert claims.kind == KIND_ADMIN and claims.sub == "admin" and claims.scope == ADMIN_SCOPES
    assert held_scopes(claims) == ROLE_SCOPES["admin"]
    (detail,) = _events(broker, "admin_auth")
    assert "built-in admin" in detail
    # A named operator called "admin" is not the built-in admin.
    _, secret = broker.add_operator(claims, name="admin", role="auditor", public_key=None, ctx=CTX)
    issued, _ = broker.operator_auth(
        name="admin", secret=secret, nonce=None, signature=None, ctx=CTX
    )
    assert issued.claims.sub == "operator:admin"
    assert held_scopes(issued.claims) == ("admin:audit:*",)


@pytest.mark.parametrize(
    "name",
    ["", "Alice", "-a", "a-", "a_b", "a b", "1abc", "a" * 65, "é", None, 7],
)
def test_malformed_names_are_refused(name: object) -> None:
    with pytest.raises(InvalidRequest):
        operator_name(name)


def test_well_formed_names() -> None:
    for name in ("a", "ops", "alice-2", "a" * 64, "on-call-7"):
        assert operator_name(name) == name


def test_add_validates_before_anything_is_written(broker: Broker) -> None:
    admin = broker.admin_auth(ADMIN_SECRET, CTX).claims
    for bad in (
        {"name": "alice", "role": "root", "public_key": None},
        {"name": "alice", "role": None, "public_key": None},
        {"name": "alice", "role": "operator", "public_key": "not-base64!"},
        {"name": "alice", "role": "operator", "public_key": base64.b64encode(b"x" * 31).decode()},
    ):
        with pytest.raises(InvalidRequest):
            broker.add_operator(admin, ctx=CTX, **bad)
    assert broker.list_operators() == []
    assert _events(broker, "operator_added") == []


def test_a_credential_change_ends_tokens_and_no_token_is_born_revoked(
    broker: Broker, clock: ManualClock
) -> None:
    admin = broker.admin_auth(ADMIN_SECRET, CTX).claims
    record, secret = broker.add_operator(
        admin, name="alice", role="operator", public_key=None, ctx=CTX
    )
    assert record.created_by == "admin" and record.secret_hash and not record.public_key
    first, _ = broker.operator_auth(
        name="alice", secret=secret, nonce=None, signature=None, ctx=CTX
    )
    assert first.claims.iat == int(clock.now())  # never dated ahead of the clock
    assert broker.authenticate(f"Bearer {first.token}", CTX).sub == "operator:alice"

    _, new_secret = broker.rotate_operator(admin, "alice", public_key=None, ctx=CTX)
    with pytest.raises(Unauthorized):
        broker.authenticate(f"Bearer {first.token}", CTX)
    with pytest.raises(Unauthorized):
        broker.operator_auth(name="alice", secret=secret, nonce=None, signature=None, ctx=CTX)
    # Until clock_skew past the rotation's second a token would be born revoked (the entry
    # also ends what a replica whose clock runs ahead signed in before it: decision 142):
    # come back then.
    skew = broker.config.clock_skew
    with pytest.raises(Unavailable) as soon:
        broker.operator_auth(name="alice", secret=new_secret, nonce=None, signature=None, ctx=CTX)
    assert soon.value.retry_after == skew + 1 and soon.value.denial_id
    assert f"sign in again in {skew + 1} s" in str(soon.value.detail)
    (hit,) = [d for d in _events(broker, "operator_auth_failed") if "changed moments ago" in d]
    assert hit.endswith(f"denial={soon.value.denial_id}")
    clock.advance(skew)
    with pytest.raises(Unavailable) as still:
        broker.operator_auth(name="alice", secret=new_secret, nonce=None, signature=None, ctx=CTX)
    assert still.value.retry_after == 1
    clock.advance(1)
    second, _ = broker.operator_auth(
        name="alice", secret=new_secret, nonce=None, signature=None, ctx=CTX
    )
    assert broker.authenticate(f"Bearer {second.token}", CTX).jti == second.claims.jti
    with pytest.raises(Unauthorized):
        broker.authenticate(f"Bearer {first.token}", CTX)


def test_key_sign_in_spends_the_nonce_whatever_the_outcome(broker: Broker) -> None:
    admin = broker.admin_auth(ADMIN_SECRET, CTX).claims
    key = nacl.signing.SigningKey.generate()
    public = base64.b64encode(bytes(key.verify_key)).decode()
    record, secret = broker.add_operator(
        admin, name="bob", role="auditor", public_key=public, ctx=CTX
    )
    assert secret == "" and record.public_key == bytes(key.verify_key)

    def sign(signer: nacl.signing.SigningKey, nonce: str, name: str = "bob") -> str:
        return base64.b64encode(signer.sign(operator_sign_in_input(name, nonce)).signature).decode()

    nonce, _ = broker.challenge()
    issued, _ = broker.operator_auth(
        name="bob", secret=None, nonce=nonce, signature=sign(key, nonce), ctx=CTX
    )
    assert issued.claims.scope == ("admin:audit:*",)
    with pytest.raises(Unauthorized) as replayed:
        broker.operator_auth(
            name="bob", secret=None, nonce=nonce, signature=sign(key, nonce), ctx=CTX
        )
    other = nacl.signing.SigningKey.generate()
    nonce, _ = broker.challenge()
    with pytest.raises(Unauthorized) as forged:
        broker.operator_auth(
            name="bob", secret=None, nonce=nonce, signature=sign(other, nonce), ctx=CTX
        )
    with pytest.raises(Unauthorized):  # the forged attempt spent that nonce
        broker.operator_auth(
            name="bob", secret=None, nonce=nonce, signature=sign(key, nonce), ctx=CTX
        )
    failures = _events(broker, "operator_auth_failed")
    for exc, reason in ((replayed, "nonce already used"), (forged, "signature does not verify")):
        denial = exc.value.denial_id
        assert denial
        (hit,) = [d for d in failures if d.endswith(f"denial={denial}")]
        assert reason in hit and "operator=bob" in hit
    # A key operator has no secret to sign in with, and a secret is not a signature.
    with pytest.raises(Unauthorized):
        broker.operator_auth(name="bob", secret="x" * 64, nonce=None, signature=None, ctx=CTX)
    with pytest.raises(InvalidRequest):
        broker.operator_auth(name="bob", secret="x", nonce=nonce, signature=None, ctx=CTX)
    with pytest.raises(InvalidRequest):
        broker.operator_auth(name="bob", secret=None, nonce=None, signature=None, ctx=CTX)


def test_removal_is_final_and_names_are_never_reused(broker: Broker) -> None:
    admin = broker.admin_auth(ADMIN_SECRET, CTX).claims
    _, secret = broker.add_operator(admin, name="carol", role="admin", public_key=None, ctx=CTX)
    carol, _ = broker.operator_auth(
        name="carol", secret=secret, nonce=None, signature=None, ctx=CTX
    )
    removed = broker.remove_operator(admin, "carol", CTX)
    assert removed.status == "removed" and not removed.secret_hash and not removed.public_key
    with pytest.raises(Unauthorized):
        broker.authenticate(f"Bearer {carol.token}", CTX)
    with pytest.raises(Unauthorized):
        broker.operator_auth(name="carol", secret=secret, nonce=None, signature=None, ctx=CTX)
    for again in (
        lambda: broker.remove_operator(admin, "carol", CTX),
        lambda: broker.rotate_operator(admin, "carol", public_key=None, ctx=CTX),
    ):
        with pytest.raises(NotFound) as exc:
            again()
        assert exc.value.denial_id
    with pytest.raises(Conflict) as taken:
        broker.add_operator(admin, name="carol", role="auditor", public_key=None, ctx=CTX)
    assert taken.value.denial_id
    denials = _events(broker, "operator_denied")
    assert len(denials) == 3 and all("by=admin" in d for d in denials)
    (detail,) = _events(broker, "operator_removed")
    assert "operator=carol" in detail and "by=admin" in detail


def test_first_admin_is_made_then_re_keyed_by_init(broker: Broker, clock: ManualClock) -> None:
    made, first = broker.set_up_first_admin("root", CTX)
    assert made.role == "admin" and made.created_by == INIT and first
    again, second = broker.set_up_first_admin("root", CTX)
    clock.advance(broker.config.clock_skew + 1)  # past the re-keying's entry (decision 142)
    assert again.created_by == INIT and second and second != first
    with pytest.raises(Unauthorized):
        broker.operator_auth(name="root", secret=first, nonce=None, signature=None, ctx=CTX)
    issued, _ = broker.operator_auth(
        name="root", secret=second, nonce=None, signature=None, ctx=CTX
    )
    assert issued.claims.scope == ROLE_SCOPES["admin"]
    assert any("by=init" in d for d in _events(broker, "operator_added"))
    assert any("by=init" in d for d in _events(broker, "operator_credential_rotated"))


# --- a sign-in in flight across a credential change ---------------------------------------


def _sqlite_or_memory(kind: str, tmp_path: Path, clock: ManualClock) -> Broker:
    """A broker on ``kind``'s store: SQLite reads through a connection other than the
    writer's, the memory store through the writer's own lock."""
    url = "memory://" if kind == "memory" else str(tmp_path / "broker.db")
    config = Config(admin_secret_hash=hash_secret(ADMIN_SECRET))
    return Broker(config, open_store(url), KeyRing.generate(), clock=clock, nonce_secret=b"n" * 32)


@pytest.mark.parametrize("kind", ["memory", "sqlite"])
@pytest.mark.parametrize("change", ["rotate", "rotate-to-key", "remove"])
def test_a_secret_checked_across_a_credential_change_gives_no_token(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, change: str, kind: str
) -> None:
    """The secret is checked against the row read before argon2 runs; a rotation or
    removal committed meanwhile (its revocation entry dated the second before the token)
    must refuse the sign-in: the ordinary 401, audited with its denial id."""
    clock = ManualClock(1_800_000_000.9)
    broker = _sqlite_or_memory(kind, tmp_path, clock)
    admin = broker.admin_auth(ADMIN_SECRET, CTX).claims
    _, secret = broker.add_operator(admin, name="alice", role="operator", public_key=None, ctx=CTX)
    clock.advance(5)
    real_verify = operators_module.verify_secret
    changed: list[str] = []

    def verify_while_the_admin_changes_it(stored: str | None, given: str) -> bool:
        ok = real_verify(stored, given)
        if not changed:
            if change == "remove":
                broker.remove_operator(admin, "alice", CTX)
            else:
                key = nacl.signing.SigningKey.generate().verify_key
                public = base64.b64encode(bytes(key)).decode() if change != "rotate" else None
                broker.rotate_operator(admin, "alice", public_key=public, ctx=CTX)
            changed.append(change)
            clock.advance(0.2)  # the check ends in the next second
        return ok

    monkeypatch.setattr(operators_module, "verify_secret", verify_while_the_admin_changes_it)
    with pytest.raises(Unauthorized) as refused:
        broker.operator_auth(name="alice", secret=secret, nonce=None, signature=None, ctx=CTX)
    assert refused.value.detail == "invalid credentials"  # as for a wrong secret
    denial = refused.value.denial_id
    assert denial
    (hit,) = [d for d in _events(broker, "operator_auth_failed") if d.endswith(f"denial={denial}")]
    assert "during sign-in" in hit and "operator=alice" in hit
    assert _events(broker, "operator_authenticated") == []


@pytest.mark.parametrize("change", ["rotate", "remove"])
def test_a_key_signature_checked_across_a_credential_change_gives_no_token(
    broker: Broker, clock: ManualClock, monkeypatch: pytest.MonkeyPatch, change: str
) -> None:
    admin = broker.admin_auth(ADMIN_SECRET, CTX).claims
    key = nacl.signing.SigningKey.generate()
    public = base64.b64encode(bytes(key.verify_key)).decode()
    broker.add_operator(admin, name="bob", role="operator", public_key=public, ctx=CTX)
    clock.advance(5.4)  # .9 into a second
    real_verify = jws_module.verify_detached
    changed: list[str] = []

    def verify_while_the_admin_changes_it(*args: object) -> bool:
        ok = real_verify(*args)  # type: ignore[arg-type]
        if not changed:
            if change == "remove":
                broker.remove_operator(admin, "bob", CTX)
            else:
                broker.rotate_operator(admin, "bob", public_key=None, ctx=CTX)
            changed.append(change)
            clock.advance(0.2)
        return ok

    monkeypatch.setattr(jws_module, "verify_detached", verify_while_the_admin_changes_it)
    nonce, _ = broker.challenge()
    signature = base64.b64encode(key.sign(operator_sign_in_input("bob", nonce)).signature)
    with pytest.raises(Unauthorized) as refused:
        broker.operator_auth(
            name="bob", secret=None, nonce=nonce, signature=signature.decode(), ctx=CTX
        )
    assert refused.value.detail == "invalid credentials" and refused.value.denial_id
    (hit,) = [
        d
        for d in _events(broker, "operator_auth_failed")
        if d.endswith(f"denial={refused.value.denial_id}")
    ]
    assert "during sign-in" in hit
    assert _events(broker, "operator_authenticated") == []


def test_a_sign_in_that_commits_before_a_slow_rotation_is_ended_by_it(
    broker: Broker, clock: ManualClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The other order: a sign-in with the old secret completes while the rotation hashes
    the new one (argon2) and a second boundary passes. The rotation's revocation entry
    must be dated when it is written, not when the rotation began, so it ends that token."""
    admin = broker.admin_auth(ADMIN_SECRET, CTX).claims
    _, secret = broker.add_operator(admin, name="dave", role="operator", public_key=None, ctx=CTX)
    clock.advance(5.4)  # .9 into a second
    real_hash = operators_module.hash_secret
    during: list[str] = []

    def hash_while_the_old_secret_signs_in(new_secret: str) -> str:
        digest = real_hash(new_secret)
        if not during:
            clock.advance(0.2)
            issued, _ = broker.operator_auth(
                name="dave", secret=secret, nonce=None, signature=None, ctx=CTX
            )
            during.append(issued.token)
        return digest

    monkeypatch.setattr(operators_module, "hash_secret", hash_while_the_old_secret_signs_in)
    broker.rotate_operator(admin, "dave", public_key=None, ctx=CTX)
    (token,) = during
    with pytest.raises(Unauthorized):
        broker.authenticate(f"Bearer {token}", CTX)


def _register_with(broker: Broker, launch_token: str, task: str) -> object:
    key = nacl.signing.SigningKey.generate()
    nonce, _ = broker.challenge()
    return broker.register(
        launch_token=launch_token,
        nonce=nonce,
        public_key=base64.b64encode(bytes(key.verify_key)).decode(),
        signature=base64.b64encode(key.sign(bytes.fromhex(nonce)).signature).decode(),
        orch_id="orch-1",
        task_id=task,
        requested_scope=["read:data:*"],
        ctx=CTX,
    )


@pytest.mark.parametrize("change", ["remove", "rotate"])
def test_an_operators_launch_tokens_end_with_its_credential(
    broker: Broker, clock: ManualClock, change: str
) -> None:
    """A launch token stands on its maker's credential: once the operator is removed or
    re-keyed (its secret stolen, say), the multi-use launch tokens it made admit no agent
    more, as its own tokens end (TM-35). Agents it launched before keep their identity."""
    admin = broker.admin_auth(ADMIN_SECRET, CTX).claims
    _, secret = broker.add_operator(
        admin, name="mallory", role="operator", public_key=None, ctx=CTX
    )
    clock.advance(1)
    signed, _ = broker.operator_auth(
        name="mallory", secret=secret, nonce=None, signature=None, ctx=CTX
    )
    launch, _ = broker.create_launch_token(
        signed.claims,
        agent_name="x",
        allowed_scope=["read:data:*"],
        single_use=False,
        max_uses=100,
        max_ttl=None,
        ttl=600,
        ctx=CTX,
    )
    before = _register_with(broker, launch, "task-0")
    clock.advance(1)
    if change == "remove":
        broker.remove_operator(admin, "mallory", CTX)
    else:
        broker.rotate_operator(admin, "mallory", public_key=None, ctx=CTX)
    clock.advance(120)
    with pytest.raises(Unauthorized) as refused:
        _register_with(broker, launch, "task-1")
    assert refused.value.denial_id
    (detail,) = [d for d in _events(broker, "registration_failed") if refused.value.denial_id in d]
    assert "operator:mallory" in detail and ("removed" in detail or "changed" in detail)
    assert broker.validate(before.token).sub == before.claims.sub  # type: ignore[attr-defined]


def test_a_name_taken_while_the_add_ran_is_a_refusal_with_its_denial(
    broker: Broker, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Another replica (or a racing request) adds "dave" after this add looked: the
    # store's unique name refuses the second insert, which must be audited like the first
    # check's refusal, never a bare 409 without a denial_id.
    admin = _builtin(broker)
    store = broker.store
    real = store.get_operator
    monkeypatch.setattr(store, "get_operator", lambda name: None)
    broker.add_operator(admin, name="dave", role="auditor", public_key=None, ctx=CTX)
    with pytest.raises(Conflict) as taken:
        broker.add_operator(admin, name="dave", role="admin", public_key=None, ctx=CTX)
    monkeypatch.setattr(store, "get_operator", real)
    assert taken.value.denial_id
    (denial,) = _events(broker, "operator_denied")
    assert "operator=dave" in denial and f"denial={taken.value.denial_id}" in denial
    assert store.get_operator("dave").role == "auditor"  # type: ignore[union-attr]
    assert len(_events(broker, "operator_added")) == 1


# Would fail if: a broker without an admin secret (every tenant's: its operators are its
# own) let its last active admin operator be removed, leaving no one who can ever manage
# it again (nothing can make another: the default tenant's admins manage the registry,
# not the tenant, and its name is never reused), or refused the removal of an admin
# while another stays, or the refusal were not audited under its denial_id.
def test_the_last_admin_of_a_broker_without_an_admin_secret_is_not_removed(
    clock: ManualClock,
) -> None:
    broker = Broker(
        Config(admin_secret_hash=""),
        open_store("memory://"),
        KeyRing.generate(),
        clock=clock,
        nonce_secret=b"n" * 32,
    )
    first, secret = broker.set_up_tenant_admin("admin", CTX)
    issued, _ = broker.operator_auth(
        name=first.name, secret=secret, nonce=None, signature=None, ctx=CTX
    )
    admin = issued.claims
    auditor, _ = broker.add_operator(admin, name="ann", role="auditor", public_key=None, ctx=CTX)
    with pytest.raises(Conflict, match="last admin") as refused:
        broker.remove_operator(admin, first.name, CTX)
    assert refused.value.denial_id
    assert any(f"denial={refused.value.denial_id}" in d for d in _events(broker, "operator_denied"))
    assert broker.store.get_operator(first.name).status == "active"  # type: ignore[union-attr]
    # Another admin: then either may go, and the other stays.
    second, _ = broker.add_operator(admin, name="bob", role="admin", public_key=None, ctx=CTX)
    assert broker.remove_operator(admin, first.name, CTX).status == "removed"
    with pytest.raises(Conflict, match="last admin"):
        broker.remove_operator(admin, second.name, CTX)
    # Operators of other roles come and go as before.
    assert broker.remove_operator(admin, auditor.name, CTX).status == "removed"


def test_a_broker_with_an_admin_secret_may_remove_its_last_admin_operator(
    broker: Broker,
) -> None:
    """The admin secret is the default tenant's way back in: nothing is locked out."""
    admin = _builtin(broker)
    only, _ = broker.add_operator(admin, name="ops", role="admin", public_key=None, ctx=CTX)
    assert broker.remove_operator(admin, only.name, CTX).status == "removed"


def test_two_removals_at_once_never_remove_a_tenants_last_two_admins(
    clock: ManualClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each removal saw the other admin active (two replicas, at once): the one written
    second finds under the write lock that the other is gone, and is refused."""
    broker = Broker(
        Config(admin_secret_hash=""),
        open_store("memory://"),
        KeyRing.generate(),
        clock=clock,
        nonce_secret=b"n" * 32,
    )
    first, secret = broker.set_up_tenant_admin("admin", CTX)
    admin = broker.operator_auth(
        name=first.name, secret=secret, nonce=None, signature=None, ctx=CTX
    )[0].claims
    broker.add_operator(admin, name="bob", role="admin", public_key=None, ctx=CTX)
    seen = broker.store.list_operators()  # both active
    assert broker.remove_operator(admin, "bob", CTX).status == "removed"
    monkeypatch.setattr(broker.store, "list_operators", lambda: seen)  # looked before
    with pytest.raises(Conflict, match="last admin") as refused:
        broker.remove_operator(admin, first.name, CTX)
    assert refused.value.denial_id
    assert broker.store.get_operator(first.name).status == "active"  # type: ignore[union-attr]
