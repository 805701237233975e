"""The key directory becomes unusable under a running broker, then comes back.

Seen under faults: with ``keys/`` moved away (a file left in its place), ``POST
/v1/admin/keys/rotate`` answered 500 ``internal error`` with a traceback. Signing goes on
with the keys in memory; a rotation must be refused with a 503 that says why, and work
again once the directory is back, with no restart.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from e2e_support import SHARED_ENV, launch_broker, stop_broker

pytestmark = pytest.mark.slow


def test_a_rotation_without_its_key_directory_is_a_503_and_works_once_it_is_back(
    tmp_path: Path,
) -> None:
    data = tmp_path / "data"
    broker = launch_broker(data, SHARED_ENV)
    try:
        admin = broker.admin_headers()
        kids = [k["kid"] for k in broker.get("/.well-known/jwks.json").json()["keys"]]
        os.rename(data / "keys", tmp_path / "keys-away")
        (data / "keys").write_text("not a directory\n")

        refused = broker.post("/v1/admin/keys/rotate", headers=admin)
        assert refused.status_code == 503, refused.text
        problem = refused.json()
        assert problem["error_code"] == "service_unavailable"
        assert "key directory" in problem["detail"], problem
        assert str(tmp_path) not in problem["detail"]  # no path in the answer
        assert refused.headers["retry-after"].isdigit()
        assert "unhandled error" not in broker.log()
        # Signing goes on with the keys in memory.
        assert broker.register(["read:data:*"]).agent_id
        assert [k["kid"] for k in broker.get("/.well-known/jwks.json").json()["keys"]] == kids

        (data / "keys").unlink()
        os.rename(tmp_path / "keys-away", data / "keys")
        rotated = broker.post("/v1/admin/keys/rotate", headers=admin)
        assert rotated.status_code == 200, rotated.text
        assert rotated.json()["previous_kid"] == kids[0]
    finally:
        stop_broker(broker)


def test_a_job_failing_every_round_is_logged_once_a_run_and_its_end_once(
    tmp_path: Path,
) -> None:
    """The key refresh runs every second: with the directory away it failed every round,
    and each round wrote a traceback to the log for as long as the outage lasted."""
    import time

    data = tmp_path / "data"
    broker = launch_broker(data, SHARED_ENV)
    try:
        os.rename(data / "keys", tmp_path / "keys-away")
        (data / "keys").write_text("not a directory\n")
        failed = "background job refresh_keys failed for tenant default"
        deadline = time.monotonic() + 30
        while broker.log().count("Traceback") < 1 and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(2)  # every job the outage fails has failed once by now
        tracebacks = broker.log().count("Traceback")
        time.sleep(4)  # four more rounds of the refresh
        log = broker.log()
        assert log.count("Traceback") == tracebacks, log[-3000:]
        assert log.count(failed) == 1, log[-3000:]
        (data / "keys").unlink()
        os.rename(tmp_path / "keys-away", data / "keys")
        back = "background job refresh_keys succeeds again for tenant default after"
        while back not in broker.log() and time.monotonic() < deadline + 30:
            time.sleep(0.2)
        log = broker.log()
        assert log.count(back) == 1, log[-3000:]
        assert log.count(failed) == 1
    finally:
        stop_broker(broker)
