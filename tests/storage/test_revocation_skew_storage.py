"""An agent or task revoked on a replica whose clock is behind the one that registered it
is ended, through the store, on every backend (docs/decisions.md 142): the entry is dated
``clock_skew`` past the revoking clock's second, the store keeps the later of two such
dates, and the other replica, a restarted one and the feed's verifiers read it as written.

Two brokers, each on its own connection to one database (one shared object for the memory
store), stand for two replicas; the one that registers runs ``AHEAD`` seconds ahead.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from nacl.signing import SigningKey

from tasklease.core.broker import Broker, IssuedToken, RequestContext
from tasklease.core.clock import ManualClock
from tasklease.core.config import Config
from tasklease.core.errors import Unavailable
from tasklease.core.keys import KeyRing
from tasklease.core.passwords import hash_secret
from tasklease.core.revocation import RevocationIndex
from tasklease.core.store import Store
from tasklease.core.tokens import ADMIN_SCOPES, KIND_ADMIN, mint
from tasklease.core.validation import TokenRejected
from tasklease.storage import MemoryStore, SQLiteStore
from tasklease.verify._claims import parse_claims

CTX = RequestContext(request_id="req-skew", remote="127.0.0.1", path="/v1/test")
START = 1_800_000_000.0
AHEAD = 20
_ADMIN_HASH = hash_secret("an admin secret long enough to pass")


def _memory(tmp_path: Path) -> Iterator[tuple[Store, Store]]:
    store = MemoryStore()
    yield store, store
    store.close()


def _sqlite(tmp_path: Path) -> Iterator[tuple[Store, Store]]:
    first, second = SQLiteStore(tmp_path / "shared.db"), SQLiteStore(tmp_path / "shared.db")
    yield first, second
    first.close()
    second.close()


def _postgres(tmp_path: Path) -> Iterator[tuple[Store, Store]]:
    import pgcluster

    try:
        cluster = pgcluster.shared_cluster()
    except pgcluster.ClusterUnavailable as exc:
        pytest.skip(str(exc))
    from tasklease.storage.postgres import PostgresStore

    url = cluster.new_database("skew")
    first, second = PostgresStore(url), PostgresStore(url)
    yield first, second
    first.close()
    second.close()


_BACKENDS = {"memory": _memory, "sqlite": _sqlite, "postgres": _postgres}


@pytest.fixture(params=list(_BACKENDS))
def stores(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Store, Store]]:
    yield from _BACKENDS[request.param](tmp_path)


class Replicas:
    def __init__(self, stores: tuple[Store, Store]) -> None:
        ring = KeyRing.generate()
        self.ring = ring
        self.fast = self._broker(stores[0], START + AHEAD)
        self.slow = self._broker(stores[1], START)

    def _broker(self, store: Store, now: float) -> Broker:
        return Broker(
            Config(admin_secret_hash=_ADMIN_HASH),
            store,
            self.ring,
            clock=ManualClock(now),
            nonce_secret=b"s" * 32,
        )

    def advance(self, seconds: float) -> None:
        for broker in (self.fast, self.slow):
            broker.clock.advance(seconds)  # type: ignore[attr-defined]

    def close(self) -> None:
        for broker in (self.fast, self.slow):
            broker.audit.close()


@pytest.fixture
def replicas(stores: tuple[Store, Store]) -> Iterator[Replicas]:
    made = Replicas(stores)
    yield made
    made.close()


def _admin(broker: Broker) -> IssuedToken:
    cfg = broker.config
    token, claims = mint(
        broker.keyring,
        kind=KIND_ADMIN,
        iss=cfg.issuer,
        sub="admin",
        aud=cfg.audience,
        iat=int(broker.clock.now()),
        ttl=300,
        scope=ADMIN_SCOPES,
        client_id="admin",
    )
    return IssuedToken(token, claims)


def _launch(broker: Broker) -> str:
    token, _ = broker.create_launch_token(
        _admin(broker).claims,
        agent_name="skew",
        allowed_scope=["read:data:*"],
        max_ttl=None,
        single_use=True,
        ttl=None,
        ctx=CTX,
    )
    return token


def _register(broker: Broker, task_id: str, launch: str | None = None) -> IssuedToken:
    key = SigningKey.generate()
    nonce, _ = broker.challenge()
    return broker.register(
        launch_token=launch or _launch(broker),
        nonce=nonce,
        public_key=base64.b64encode(bytes(key.verify_key)).decode(),
        signature=base64.b64encode(key.sign(bytes.fromhex(nonce)).signature).decode(),
        orch_id="orch-1",
        task_id=task_id,
        requested_scope=["read:data:*"],
        ctx=CTX,
    )


def _revoke(broker: Broker, level: str, target: str) -> None:
    broker.revoke(_admin(broker).claims, level=level, target=target, ctx=CTX)


def _level(broker: Broker, token: str) -> str:
    with pytest.raises(TokenRejected) as refused:
        broker.validate(token)
    return str(refused.value)


def _verifier_match(broker: Broker, token: str) -> str | None:
    index = RevocationIndex()
    index.apply(broker.revocation_feed(None).records)
    payload = json.loads(base64.urlsafe_b64decode(token.split(".")[1] + "=="))
    return index.match(parse_claims(payload))


@pytest.mark.parametrize("level", ["agent", "task"])
def test_a_revocation_on_the_replica_behind_ends_what_the_one_ahead_registered(
    replicas: Replicas, level: str
) -> None:
    r = replicas
    agent = _register(r.fast, "task-a")
    assert agent.claims.oiat == int(START) + AHEAD
    target = agent.claims.sub if level == "agent" else "task-a"
    _revoke(r.slow, level, target)
    assert r.fast.refresh_revocations() >= 1
    for broker in (r.slow, r.fast):
        assert f"(level {level})" in _level(broker, agent.token)
    assert _verifier_match(r.fast, agent.token) == level
    (entry,) = r.fast.store.find_revocations([(level, target)])
    assert entry.revoked_at == int(START) + r.slow.config.clock_skew
    # A replica started now loads it as written.
    restarted = r._broker(r.fast.store, START + AHEAD)
    try:
        assert f"(level {level})" in _level(restarted, agent.token)
    finally:
        restarted.audit.close()


def test_the_stored_entry_takes_the_later_date_and_never_an_earlier_one(
    replicas: Replicas,
) -> None:
    r = replicas
    skew = r.slow.config.clock_skew
    _revoke(r.slow, "task", "task-w")
    _revoke(r.fast, "task", "task-w")
    _revoke(r.slow, "task", "task-w")
    (entry,) = r.slow.store.find_revocations([("task", "task-w")])
    assert entry.revoked_at == int(START) + AHEAD + skew
    records = [rec for rec in r.slow.revocation_feed(None).records if rec.target == "task-w"]
    assert [rec.revoked_at for rec in records] == [entry.revoked_at]


def test_a_new_run_of_the_task_registers_once_the_entry_is_past_and_spends_nothing_before(
    replicas: Replicas,
) -> None:
    r = replicas
    old = _register(r.fast, "task-r")
    _revoke(r.slow, "task", "task-r")
    r.fast.refresh_revocations()
    launch = _launch(r.fast)
    with pytest.raises(Unavailable) as soon:
        _register(r.fast, "task-r", launch)
    assert soon.value.retry_after == r.slow.config.clock_skew + 1 - AHEAD
    r.advance(soon.value.retry_after)
    run = _register(r.fast, "task-r", launch)  # the single-use launch token is unspent
    r.slow.refresh_revocations()
    for broker in (r.fast, r.slow):
        assert broker.validate(run.token).task_id == "task-r"
        assert "(level task)" in _level(broker, old.token)
    assert _verifier_match(r.slow, run.token) is None
