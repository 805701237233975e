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
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from e2e_support import SHARED_ENV, launch_broker, stop_broker
from keystore_support import SoftHSM

pytestmark = pytest.mark.slow


def _wait_until(condition: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"condition not met within {timeout}s"
        time.sleep(0.1)


def test_signing_fails_closed_while_the_token_is_away_and_recovers(
    softhsm: SoftHSM, tmp_path: Path
) -> None:
    # A token of this test's own: its directory is moved away under the broker.
    root = tmp_path / "hsm"
    tokens = root / "tokens"
    tokens.mkdir(parents=True)
    conf = root / "softhsm2.conf"
    conf.write_text(
        f"directories.tokendir = {tokens}\nobjectstore.backend = file\nlog.level = ERROR\n"
    )
    hsm = SoftHSM(module=softhsm.module, conf=conf, token_label="away", pin=softhsm.pin)
    hsm.init_token(hsm.token_label, hsm.pin)
    broker = launch_broker(tmp_path / "data", {**SHARED_ENV, **hsm.env("away-")})
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
