"""The PKCS#11 token goes away under a running broker, then comes back.

Seen under faults: with SoftHSM's token directory moved away, every signing request
(registration, sign-in) answered 500 ``internal error`` with a traceback in the log, and
kept doing so after the token came back, until a restart: the session and key handle
the provider opened at start were dead for good. A signing request must fail closed with
a 503 that says why (no token, no audit event), and the broker must sign again by itself
once the token is back.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from e2e_support import SHARED_ENV, TASKLEASE, RunningBroker, launch_broker, stop_broker
from keystore_support import SoftHSM

pytestmark = pytest.mark.slow


def _wait_until(condition: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"condition not met within {timeout}s"
        time.sleep(0.1)


def _own_token(softhsm: SoftHSM, tmp_path: Path) -> tuple[SoftHSM, Path]:
    """A token of the test's own, and the directory to move away under the broker."""
    root = tmp_path / "hsm"
    tokens = root / "tokens"
    tokens.mkdir(parents=True)
    conf = root / "softhsm2.conf"
    conf.write_text(
        f"directories.tokendir = {tokens}\nobjectstore.backend = file\nlog.level = ERROR\n"
    )
    hsm = SoftHSM(module=softhsm.module, conf=conf, token_label="away", pin=softhsm.pin)
    hsm.init_token(hsm.token_label, hsm.pin)
    return hsm, tokens


def _launch_on(hsm: SoftHSM, data: Path) -> RunningBroker:
    """A broker whose key is on ``hsm``'s token. ``init`` runs as a process of its own: the
    PKCS#11 module this process may have loaded reads the token directory of the
    configuration it was first loaded with, another test's."""
    env = {**SHARED_ENV, **hsm.env("away-")}
    data.mkdir(mode=0o700)
    made = subprocess.run(
        [TASKLEASE, "init", "--data-dir", str(data), "--secret-file", str(data / "secret")],
        capture_output=True, text=True, timeout=120, check=False,
        env={**{k: v for k, v in os.environ.items() if not k.startswith("TASKLEASE_")}, **env},
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    return launch_broker(data, env)


def test_signing_fails_closed_while_the_token_is_away_and_recovers(
    softhsm: SoftHSM, tmp_path: Path
) -> None:
    hsm, tokens = _own_token(softhsm, tmp_path)
    root = tokens.parent
    broker = _launch_on(hsm, tmp_path / "data")
    broker.client.timeout = httpx.Timeout(20)
    try:
        admin = broker.admin_headers()
        agent = broker.register(["read:data:*"])
        bodies = [
            broker.register_body(broker.launch_token(["read:data:*"], ttl=600), ["read:data:*"])[0]
            for _ in range(3)
        ]
        events = broker.get("/v1/audit/events", headers=admin).json()["total"]

        os.rename(tokens, root / "away")
        refused = [
            broker.post("/v1/register", json=bodies[0]),
            broker.post("/v1/admin/auth", json={"secret": broker.admin_secret}),
            broker.post("/v1/register", json=bodies[1]),
        ]
        for answer in refused:
            assert answer.status_code == 503, answer.text
            problem = answer.json()
            assert problem["error_code"] == "service_unavailable"
            assert "signing key" in problem["detail"], problem
            assert answer.headers["retry-after"].isdigit()
            assert "access_token" not in problem
        # Validation needs no signature: it goes on.
        assert broker.is_valid(agent.access_token)
        # Nothing refused was recorded as done.
        assert broker.get("/v1/audit/events", headers=admin).json()["total"] == events
        assert "unhandled error" not in broker.log()

        os.rename(root / "away", tokens)
        _wait_until(
            lambda: (
                broker.post("/v1/admin/auth", json={"secret": broker.admin_secret}).status_code
                == 200
            ),
            10,
        )
        answer = broker.post("/v1/register", json=bodies[2])
        assert answer.status_code == 200, answer.text
        assert broker.is_valid(answer.json()["access_token"])
    finally:
        stop_broker(broker)


# Would fail if: readiness said ready while the token failed every signature (a load
# balancer kept sending sign-ins and registrations to a replica that answers each 503),
# or if, once not ready, the replica waited for a signing request to find its key again
# (a balancer sends none to a replica that is not ready: it would stay out for good).
def test_readiness_fails_while_the_token_fails_and_recovers_by_itself(
    softhsm: SoftHSM, tmp_path: Path
) -> None:
    hsm, tokens = _own_token(softhsm, tmp_path)
    root = tokens.parent
    broker = _launch_on(hsm, tmp_path / "data")
    broker.client.timeout = httpx.Timeout(20)
    try:
        assert broker.get("/v1/health/ready").status_code == 200
        os.rename(tokens, root / "away")
        refused = broker.post("/v1/admin/auth", json={"secret": broker.admin_secret})
        assert refused.status_code == 503, refused.text
        ready = broker.get("/v1/health/ready")
        assert ready.status_code == 503, ready.text
        assert "signing key" in ready.json()["detail"], ready.text
        assert ready.headers["retry-after"].isdigit()
        health = broker.get("/v1/health").json()
        assert health["status"] == "degraded" and "signing key" in health["reason"], health
        # Still away a few probes later: readiness looks for the key again (at most once
        # a second), and says not ready while it is not found.
        time.sleep(2.5)
        assert broker.get("/v1/health/ready").status_code == 503

        os.rename(root / "away", tokens)
        # No signing request in between: readiness alone finds the key again.
        _wait_until(lambda: broker.get("/v1/health/ready").status_code == 200, 10)
        assert broker.get("/v1/health").json()["status"] == "ok"
        signed = broker.post("/v1/admin/auth", json={"secret": broker.admin_secret})
        assert signed.status_code == 200, signed.text
        assert "the PKCS#11 token signs again" in broker.log()
        assert "unhandled error" not in broker.log()
    finally:
        stop_broker(broker)
