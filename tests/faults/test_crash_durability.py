"""What a SIGKILL in the middle of work must leave, beyond test_crash's tokens: every
revocation acknowledged (at agent and task level) in force on every worker and in the
revocation feed; every token whose issuance was answered, and every audited refusal that
was answered, in the audit log; no event without the write it describes; the single-use
things spent before the kill (nonces, launch tokens) still spent; and a broker that
starts again on its data directory without ``db accept-restore``, its log verifying and
its checkpoint anchor agreeing with the database.
"""

from __future__ import annotations

import random
import secrets
import sqlite3
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from e2e_support import b64, jwt_parts
from test_crash import _audit_verifies, _kill, _start, _stop

pytestmark = pytest.mark.slow

SCOPE = ["read:data:*"]
CLIENTS = 8
ACKED_BEFORE_KILL = 120


@dataclass
class Registered:
    agent_id: str
    task_id: str
    token: str
    nonce: str
    launch_token: str
    key: Ed25519PrivateKey


@dataclass
class Ledger:
    lock: threading.Lock = field(default_factory=threading.Lock)
    registered: list[Registered] = field(default_factory=list)
    revoked: list[tuple[str, str, str]] = field(default_factory=list)  # level, target, token
    denials: list[str] = field(default_factory=list)
    acked: int = 0
    errors: list[str] = field(default_factory=list)


def _register_body(lt: str, nonce: str, key: Ed25519PrivateKey, task: str) -> dict[str, object]:
    public = key.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    return {
        "launch_token": lt,
        "nonce": nonce,
        "public_key": b64(public),
        "signature": b64(key.sign(bytes.fromhex(nonce))),
        "orch_id": "orch-crash",
        "task_id": task,
        "requested_scope": SCOPE,
    }


def _loop(url: str, admin: str, ledger: Ledger, stop: threading.Event, seed: int) -> None:
    rng = random.Random(seed)
    mine: list[Registered] = []
    bearer = {"Authorization": f"Bearer {admin}"}
    with httpx.Client(base_url=url, timeout=15.0) as client:
        while not stop.is_set():
            choice = rng.random()
            try:
                if choice < 0.45 or not mine:
                    lt = client.post(
                        "/v1/admin/launch-tokens",
                        json={"agent_name": "crash", "allowed_scope": SCOPE},
                        headers=bearer,
                    )
                    lt.raise_for_status()
                    launch = lt.json()["launch_token"]
                    nonce = client.get("/v1/challenge").raise_for_status().json()["nonce"]
                    key = Ed25519PrivateKey.generate()
                    task = f"task-{secrets.token_hex(6)}"
                    resp = client.post(
                        "/v1/register", json=_register_body(launch, nonce, key, task)
                    )
                    resp.raise_for_status()
                    got = resp.json()
                    held = Registered(
                        got["agent_id"], task, got["access_token"], nonce, launch, key
                    )
                    mine.append(held)
                    with ledger.lock:
                        ledger.registered.append(held)
                elif choice < 0.7:
                    # An audited refusal: a launch token that is none.
                    nonce = client.get("/v1/challenge").raise_for_status().json()["nonce"]
                    key = Ed25519PrivateKey.generate()
                    body = _register_body("lt-" + secrets.token_hex(16), nonce, key, "t-x")
                    resp = client.post("/v1/register", json=body)
                    if resp.status_code >= 500:
                        resp.raise_for_status()
                    assert 400 <= resp.status_code < 500, resp.text
                    denial = resp.json().get("denial_id")
                    assert denial, resp.text
                    with ledger.lock:
                        ledger.denials.append(str(denial))
                else:
                    held = mine.pop(rng.randrange(len(mine)))
                    level = rng.choice(["agent", "task"])
                    target = held.agent_id if level == "agent" else held.task_id
                    resp = client.post(
                        "/v1/revoke", json={"level": level, "target": target}, headers=bearer
                    )
                    resp.raise_for_status()
                    with ledger.lock:
                        ledger.revoked.append((level, target, held.token))
            except (httpx.TransportError, httpx.HTTPStatusError) as exc:
                if not stop.is_set():
                    with ledger.lock:
                        ledger.errors.append(repr(exc))
                return
            with ledger.lock:
                ledger.acked += 1


def _valid_on_fresh_connections(url: str, token: str, tries: int) -> set[bool]:
    seen = set()
    for _ in range(tries):
        with httpx.Client(base_url=url, timeout=15.0) as client:
            resp = client.post("/v1/token/validate", json={"token": token})
            assert resp.status_code == 200, resp.text
            seen.add(bool(resp.json()["valid"]))
    return seen


@pytest.mark.parametrize("workers", [2])
def test_a_sigkill_loses_nothing_acknowledged(tmp_path: Path, workers: int) -> None:
    data = tmp_path / "data"
    broker = _start(data, workers)
    try:
        admin = broker.admin_token()
        ledger, stop = Ledger(), threading.Event()
        threads = [
            threading.Thread(target=_loop, args=(broker.url, admin, ledger, stop, seed))
            for seed in range(CLIENTS)
        ]
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + 90
        while ledger.acked < ACKED_BEFORE_KILL:
            assert not ledger.errors, ledger.errors
            assert time.monotonic() < deadline, f"only {ledger.acked} acknowledged"
            time.sleep(0.01)
        stop.set()
        _kill(broker.proc)
        for thread in threads:
            thread.join(timeout=30)
        assert not ledger.errors, ledger.errors
    finally:
        broker.client.close()
        if broker.proc.poll() is None:
            _kill(broker.proc)
    assert ledger.registered and ledger.revoked and ledger.denials

    # The database, read directly: every answered issuance and refusal has its event,
    # and every agent_registered event its agent (no event for a write rolled back).
    db = sqlite3.connect(f"file:{data / 'tasklease.db'}?mode=ro", uri=True)
    try:
        details = [row[0] for row in db.execute("SELECT detail FROM audit_events")]
        joined = "\n".join(details)
        for held in ledger.registered:
            jti = str(jwt_parts(held.token)[1]["jti"])
            assert f"jti={jti}" in joined, f"issued token {jti} has no audit event"
        for denial in ledger.denials:
            assert f"denial={denial}" in joined, f"refusal {denial} has no audit event"
        agents = {row[0] for row in db.execute("SELECT agent_id FROM agents")}
        events = db.execute(
            "SELECT agent_id FROM audit_events WHERE event_type = 'agent_registered'"
        ).fetchall()
        for (agent_id,) in events:
            assert agent_id in agents, f"{agent_id} registered in the log, absent in the store"
    finally:
        db.close()

    again = _start(data, workers)  # no accept-restore asked for after a plain crash
    try:
        for _level, _target, token in ledger.revoked:
            assert _valid_on_fresh_connections(again.url, token, 4) == {False}, _target
        feed = again.get("/v1/revocations", headers=again.admin_headers())
        assert feed.status_code == 200, feed.text
        entries = {(e["level"], e["target"]) for e in feed.json()["revocations"]}
        for level, target, _ in ledger.revoked:
            assert (level, target) in entries, f"{level} {target} missing from the feed"
        # Single-use things stay spent: the nonce and launch token of each acknowledged
        # registration are refused when used again.
        for held in ledger.registered[:20]:
            fresh_launch = again.launch_token(SCOPE)
            body = _register_body(fresh_launch, held.nonce, Ed25519PrivateKey.generate(), "t")
            resp = again.post("/v1/register", json=body)
            assert resp.status_code >= 400, f"nonce {held.nonce} used again: {resp.text}"
            body = _register_body(
                held.launch_token, again.nonce(), Ed25519PrivateKey.generate(), "t"
            )
            resp = again.post("/v1/register", json=body)
            assert resp.status_code >= 400, f"launch token used again: {resp.text}"
    finally:
        _stop(again)
    _audit_verifies(data)


@dataclass
class AdminLedger:
    lock: threading.Lock = field(default_factory=threading.Lock)
    removed_apps: list[str] = field(default_factory=list)  # app tokens of removed apps
    tenants: list[tuple[str, str]] = field(default_factory=list)  # name, admin secret
    rotated: list[str] = field(default_factory=list)  # kids made active
    log_rotations: int = 0
    acked: int = 0
    errors: list[str] = field(default_factory=list)


def _admin_loop(
    url: str, admin: str, ledger: AdminLedger, stop: threading.Event, seed: int
) -> None:
    """App removals (with a live app token), tenant creations, key and log-key rotations."""
    rng = random.Random(seed)
    bearer = {"Authorization": f"Bearer {admin}"}
    with httpx.Client(base_url=url, timeout=30.0) as client:
        while not stop.is_set():
            choice = rng.random()
            try:
                if choice < 0.5:
                    made = client.post(
                        "/v1/admin/apps",
                        json={"name": f"app-{secrets.token_hex(4)}", "scopes": SCOPE},
                        headers=bearer,
                    )
                    made.raise_for_status()
                    app = made.json()
                    signed = client.post(
                        "/v1/app/auth",
                        json={"client_id": app["client_id"], "client_secret": app["client_secret"]},
                    )
                    signed.raise_for_status()
                    gone = client.delete(f"/v1/admin/apps/{app['app_id']}", headers=bearer)
                    gone.raise_for_status()
                    with ledger.lock:
                        ledger.removed_apps.append(signed.json()["access_token"])
                elif choice < 0.75:
                    name = f"t{secrets.token_hex(4)}"
                    made = client.post("/v1/admin/tenants", json={"name": name}, headers=bearer)
                    made.raise_for_status()
                    with ledger.lock:
                        ledger.tenants.append((name, made.json()["admin_secret"]))
                elif choice < 0.9:
                    rotated = client.post("/v1/admin/keys/rotate", headers=bearer)
                    rotated.raise_for_status()
                    with ledger.lock:
                        ledger.rotated.append(str(rotated.json().get("kid", "")))
                else:
                    rotated = client.post("/v1/admin/audit/log-key/rotate", headers=bearer)
                    rotated.raise_for_status()
                    with ledger.lock:
                        ledger.log_rotations += 1
            except (httpx.TransportError, httpx.HTTPStatusError) as exc:
                if not stop.is_set():
                    with ledger.lock:
                        ledger.errors.append(repr(exc))
                return
            with ledger.lock:
                ledger.acked += 1


@pytest.mark.parametrize("kill_after", [3, 8, 14])
def test_a_sigkill_during_admin_changes_leaves_a_consistent_broker(
    tmp_path: Path, kill_after: int
) -> None:
    data = tmp_path / "data"
    broker = _start(data, 2)
    try:
        admin = broker.admin_token()
        ledger, stop = AdminLedger(), threading.Event()
        load = Ledger()
        threads = [
            threading.Thread(target=_admin_loop, args=(broker.url, admin, ledger, stop, seed))
            for seed in range(3)
        ] + [
            threading.Thread(target=_loop, args=(broker.url, admin, load, stop, 100 + seed))
            for seed in range(3)
        ]
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + 120
        while ledger.acked < kill_after:
            assert not ledger.errors and not load.errors, (ledger.errors, load.errors)
            assert time.monotonic() < deadline, f"only {ledger.acked} acknowledged"
            time.sleep(0.005)
        time.sleep(random.random() * 0.05)
        stop.set()
        _kill(broker.proc)
        for thread in threads:
            thread.join(timeout=60)
        assert not ledger.errors and not load.errors, (ledger.errors, load.errors)
    finally:
        broker.client.close()
        if broker.proc.poll() is None:
            _kill(broker.proc)

    again = _start(data, 2)
    try:
        for token in ledger.removed_apps:
            assert _valid_on_fresh_connections(again.url, token, 3) == {False}
        for name, secret in ledger.tenants:
            view = again.tenant(name, secret)  # signs in as its admin: it is served
            listed = view.get("/v1/admin/apps", headers=view.admin_headers())
            assert listed.status_code == 200, listed.text
        jwks = {key["kid"] for key in again.get("/.well-known/jwks.json").json()["keys"]}
        for kid in ledger.rotated:
            assert not kid or kid in jwks, kid
        for _level, _target, token in load.revoked:
            assert not again.is_valid(token)
        # Every tenant, created or half-created, works after the restart.
        created = again.post(
            "/v1/admin/tenants", json={"name": "after"}, headers=again.admin_headers()
        )
        assert created.status_code == 201, created.text
    finally:
        for view in again._views:
            view.client.close()
        _stop(again)
    _audit_verifies(data)
