"""Launch tokens are not standing secrets: counted uses, a capped lifetime, strict input,
and resume by key that a launch token may switch off."""

from __future__ import annotations

import base64
import threading
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from tasklease.core.config import Config
from tasklease.core.errors import (
    Forbidden,
    InvalidRequest,
    InvalidTTL,
    RenewalCountExceeded,
    TaskleaseError,
    Unauthorized,
)
from tasklease.core.kernel import Parent, Refusal, check_issuance
from tasklease.core.launch import DEFAULT_MULTI_USES, MAX_USES, launch_token_hash
from tasklease.core.store import AuditQuery
from tasklease.storage import open_store


def events(broker: Any, event_type: str) -> list[Any]:
    return broker.store.query_audit(AuditQuery(event_type=event_type, limit=1000))[0]


def create(broker: Any, kit: Any, **fields: Any) -> Any:
    """The stored record of a launch token the admin creates with ``fields``."""
    _, record = broker.create_launch_token(
        kit.admin(broker).claims,
        agent_name="limits",
        allowed_scope=["read:data:*"],
        max_ttl=fields.pop("max_ttl", None),
        single_use=fields.pop("single_use", None),
        ttl=fields.pop("ttl", None),
        ctx=kit.ctx,
        **fields,
    )
    return record


def launch(broker: Any, kit: Any, **fields: Any) -> str:
    token, _ = broker.create_launch_token(
        kit.admin(broker).claims,
        agent_name="limits",
        allowed_scope=["read:data:*"],
        max_ttl=None,
        single_use=fields.pop("single_use", None),
        ttl=fields.pop("ttl", None),
        ctx=kit.ctx,
        **fields,
    )
    return str(token)


def stored(broker: Any, token: str) -> Any:
    record = broker.store.get_launch_token(launch_token_hash(token))
    assert record is not None
    return record


def resume(broker: Any, agent: Any, kit: Any) -> Any:
    nonce, _ = broker.challenge()
    signature = base64.b64encode(agent.key.sign(bytes.fromhex(nonce)).signature).decode()
    return broker.resume(agent_id=agent.sub, nonce=nonce, signature=signature, ctx=kit.ctx)


# --- uses ----------------------------------------------------------------------------------


def test_single_use_is_the_default_and_admits_one(broker: Any, kit: Any) -> None:
    record = create(broker, kit)
    assert (record.single_use, record.max_uses, record.uses_left) == (True, 1, 1)
    assert create(broker, kit, single_use=True, max_uses=1).max_uses == 1


def test_multi_use_without_max_uses_admits_the_default(broker: Any, kit: Any) -> None:
    token = launch(broker, kit, single_use=False)
    assert stored(broker, token).max_uses == DEFAULT_MULTI_USES == 10
    for n in range(DEFAULT_MULTI_USES):
        kit.register(broker, token, task_id=f"task-{n}")
    with pytest.raises(Unauthorized, match="already consumed") as refused:
        kit.register(broker, token)
    assert refused.value.denial_id
    record = stored(broker, token)
    assert (record.uses, record.uses_left) == (10, 0)
    assert record.consumed_at == broker.clock.now()
    (denial,) = events(broker, "registration_failed")
    assert "10 of 10 uses" in denial.detail
    assert f"denial={refused.value.denial_id}" in denial.detail


def test_max_uses_counts_every_registration(broker: Any, kit: Any) -> None:
    token = launch(broker, kit, single_use=False, max_uses=3)
    for n in range(3):
        kit.register(broker, token, task_id=f"task-{n}")
        assert stored(broker, token).uses_left == 2 - n
    with pytest.raises(Unauthorized):
        kit.register(broker, token)
    assert len(events(broker, "agent_registered")) == 3
    (issued,) = events(broker, "launch_token_issued")
    assert "max_uses=3" in issued.detail
    assert "allow_resume=True" in issued.detail


def test_a_refused_registration_takes_no_use(broker: Any, kit: Any) -> None:
    token = launch(broker, kit, single_use=False, max_uses=2)
    with pytest.raises(TaskleaseError):
        kit.register(broker, token, ["write:data:*"])  # above the launch token's scope
    args, _ = kit.register_args(broker, token)
    with pytest.raises(TaskleaseError):
        broker.register(**dict(args, signature=base64.b64encode(b"x" * 64).decode()))
    assert stored(broker, token).uses == 0
    kit.register(broker, token, task_id="one")
    kit.register(broker, token, task_id="two")
    assert stored(broker, token).uses_left == 0


@pytest.mark.parametrize("backend", ["memory", "sqlite"])
def test_twenty_threads_on_five_uses_five_winners(
    make_broker: Any, kit: Any, tmp_path: Path, backend: str
) -> None:
    url = "memory://" if backend == "memory" else str(tmp_path / "broker.db")
    broker = make_broker(store=open_store(url))
    token = launch(broker, kit, single_use=False, max_uses=5)
    prepared = [kit.register_args(broker, token, task_id=f"t-{n}")[0] for n in range(20)]
    barrier = threading.Barrier(20)
    wins: list[Any] = []
    losses: list[BaseException] = []
    lock = threading.Lock()

    def attempt(args: dict[str, Any]) -> None:
        barrier.wait(timeout=30)
        try:
            issued = broker.register(**args)
        except TaskleaseError as exc:
            with lock:
                losses.append(exc)
        else:
            with lock:
                wins.append(issued)

    threads = [threading.Thread(target=attempt, args=(a,)) for a in prepared]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert (len(wins), len(losses)) == (5, 15)
    assert all(isinstance(exc, Unauthorized) for exc in losses)
    assert len(events(broker, "agent_registered")) == 5
    assert stored(broker, token).uses_left == 0
    broker.store.close()


# --- input ---------------------------------------------------------------------------------


@pytest.mark.parametrize("field", ["ttl", "max_ttl"])
@pytest.mark.parametrize("value", [0, -1, -3600, 1.5, "60", True, [60]])
def test_ttl_and_max_ttl_must_be_positive_integers(
    broker: Any, kit: Any, field: str, value: object
) -> None:
    with pytest.raises(InvalidRequest) as refused:
        create(broker, kit, **{field: value})
    assert refused.value.code == "invalid_request"
    assert refused.value.detail.startswith(f"{field} must be a positive integer")
    assert events(broker, "launch_token_issued") == []


@pytest.mark.parametrize("value", [0, -1, 1.0, "5", False, MAX_USES + 1])
def test_max_uses_must_be_an_integer_from_one(broker: Any, kit: Any, value: object) -> None:
    with pytest.raises(InvalidRequest) as refused:
        create(broker, kit, single_use=False, max_uses=value)
    assert refused.value.code == "invalid_request"
    assert refused.value.detail.startswith("max_uses must be an integer from 1")
    assert events(broker, "launch_token_issued") == []


@pytest.mark.parametrize("single_use", [None, True])
def test_max_uses_above_one_needs_multi_use(broker: Any, kit: Any, single_use: object) -> None:
    with pytest.raises(InvalidRequest, match="max_uses above 1 needs single_use: false"):
        create(broker, kit, single_use=single_use, max_uses=2)
    assert create(broker, kit, single_use=False, max_uses=MAX_USES).max_uses == MAX_USES


def test_allow_resume_must_be_a_boolean(broker: Any, kit: Any) -> None:
    with pytest.raises(InvalidRequest, match="allow_resume must be a boolean"):
        create(broker, kit, allow_resume="no")


# --- lifetime ------------------------------------------------------------------------------


def test_the_launch_token_lifetime_ceiling_is_an_hour_by_default(broker: Any, kit: Any) -> None:
    assert broker.config.launch_token_max_ttl == 3600
    now = broker.clock.now()
    assert create(broker, kit, ttl=3600).expires_at == now + 3600
    with pytest.raises(InvalidTTL, match="at most 3600 seconds"):
        create(broker, kit, ttl=3601)
    with pytest.raises(InvalidTTL):
        create(broker, kit, single_use=False, ttl=86400)


def test_the_ceiling_is_configurable(make_broker: Any, kit: Any) -> None:
    broker = make_broker(launch_token_max_ttl=7200)
    assert create(broker, kit, ttl=7200).expires_at == broker.clock.now() + 7200
    with pytest.raises(InvalidTTL):
        create(broker, kit, ttl=7201)


def test_default_validity(make_broker: Any, kit: Any) -> None:
    broker = make_broker()
    now = broker.clock.now()
    assert create(broker, kit).expires_at == now + 30
    assert create(broker, kit, single_use=False).expires_at == now + 30
    # Even where launch tokens are configured to live long, a multi-use one that names
    # no ttl lives an hour at most.
    long = make_broker(launch_token_ttl=7200, launch_token_max_ttl=86400)
    assert create(long, kit).expires_at == now + 7200
    assert create(long, kit, single_use=False).expires_at == now + 3600


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"launch_token_max_ttl": 0}, "launch_token_max_ttl must be between 1 and"),
        ({"launch_token_ttl": 3601}, "launch_token_ttl must not exceed launch_token_max_ttl"),
    ],
)
def test_config_refuses_an_inconsistent_ceiling(settings: dict[str, int], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Config(**settings)  # type: ignore[arg-type]


# --- resume --------------------------------------------------------------------------------


def test_resume_is_allowed_by_default(broker: Any, kit: Any) -> None:
    token = launch(broker, kit)
    assert stored(broker, token).allow_resume is True
    agent = kit.register(broker, token)
    assert broker.store.get_agent(agent.sub).allow_resume is True
    assert resume(broker, agent, kit).claims.sub == agent.sub


def test_resume_switched_off_is_refused_and_audited(broker: Any, kit: Any) -> None:
    token = launch(broker, kit, allow_resume=False)
    agent = kit.register(broker, token)
    assert broker.store.get_agent(agent.sub).allow_resume is False
    with pytest.raises(Forbidden) as refused:
        resume(broker, agent, kit)
    assert refused.value.code == "forbidden"
    assert refused.value.denial_id
    (denial,) = events(broker, "agent_resume_denied")
    assert denial.agent_id == agent.sub
    assert "allow_resume false" in denial.detail
    assert denial.detail.endswith(f"denial={refused.value.denial_id}")
    assert events(broker, "agent_resumed") == []
    # Only resumption is off: the agent renews its token as usual.
    assert broker.renew(agent.claims, kit.ctx).claims.sub == agent.sub


def test_resume_switched_off_is_an_issuance_rule(broker: Any) -> None:
    parent = Parent(
        holder="spiffe://tasklease.local/agent/o/t/1",
        scope=("read:data:*",),
        audience=("tasklease",),
        principal="admin",
        lineage=(),
        ceiling=2_000,
        ttl=300,
        renewals=0,
        resumable=False,
    )
    args: dict[str, Any] = {
        "holder": parent.holder,
        "scope": parent.scope,
        "iat": 1_000,
        "requested_ttl": 300,
        "config": broker.config,
    }
    with pytest.raises(Refusal) as refused:
        check_issuance("resume", parent, **args)
    assert isinstance(refused.value.error, Forbidden)
    assert check_issuance("renew", parent, **args).exp == 1_300
    # Switched on, the rest of the check still applies (here: the renewal budget).
    spent = replace(parent, resumable=True, renewals=broker.config.max_renewals)
    with pytest.raises(Refusal) as budget:
        check_issuance("resume", spent, **args)
    assert isinstance(budget.value.error, RenewalCountExceeded)
