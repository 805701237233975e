"""A launch token made by an app token that its key change ends admits no agent, however
the making raced the change (decision 185 left this open).

The change revokes the app's tokens up to ``clock_skew`` past its second (decision 142).
A launch token made by such a token, on a replica whose clock runs ahead of the changer's
(within the skew), is dated after the change's ``credential_changed_at`` and so outlived
it: an agent registered with it after the change was answered. The change's revocation
entry now ends it too, as it ends the token that made it.

Two brokers on one SQLite file stand for two replicas, ``FAST`` seconds apart.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from nacl.signing import SigningKey

from tasklease.core.broker import Broker
from tasklease.core.clock import ManualClock
from tasklease.core.errors import Unauthorized
from tasklease.core.keys import KeyRing
from tasklease.core.pending import complete
from tasklease.storage import SQLiteStore

from .conftest import START, b64

FAST = 10  # how far the replica that makes the launch token runs ahead (clock_skew is 30)


def _key() -> str:
    return b64(bytes(SigningKey.generate().verify_key))


def _launch(broker: Broker, kit: Any, app_id: str) -> Any:
    return broker.prepare_launch_token(
        kit.app(broker, app_id).claims,
        agent_name="worker",
        allowed_scope=["read:data:*"],
        max_ttl=None,
        single_use=None,
        ttl=None,
        ctx=kit.ctx,
    )


def test_a_launch_token_made_as_its_apps_key_changed_admits_no_agent(
    make_broker: Any, kit: Any, tmp_path: Path
) -> None:
    path, ring = tmp_path / "broker.db", KeyRing.generate()
    fast = make_broker(store=SQLiteStore(path), keyring=ring, clock=ManualClock(START + FAST))
    slow = make_broker(store=SQLiteStore(path), keyring=ring, clock=ManualClock(START))
    admin = kit.admin(slow).claims
    app, _ = slow.register_app(
        admin,
        name="launcher",
        scopes=["read:data:*"],
        token_ttl=None,
        ctx=kit.ctx,
        public_key=_key(),
    )
    pending = _launch(fast, kit, app.app_id)  # checked with the old key's app token
    for broker in (fast, slow):
        broker.clock.advance(1)  # type: ignore[attr-defined]
    slow.update_app(
        admin, app.app_id, scopes=["read:data:*"], token_ttl=None, public_key=_key(), ctx=kit.ctx
    )
    raced, _ = complete(fast.kernel, pending)  # written after the change was answered
    with pytest.raises(Unauthorized):
        kit.register(slow, raced, task_id="task-raced")

    # A launch token the app makes once it may sign in again with its new key registers.
    for broker in (fast, slow):
        broker.clock.advance(slow.config.clock_skew + 1)  # type: ignore[attr-defined]
    fresh, _ = complete(slow.kernel, _launch(slow, kit, app.app_id))
    assert kit.register(slow, fresh, task_id="task-fresh").sub
