# Would fail if: two workers sharing a database signed checkpoints of one log that no
# consistency proof links, served different logs, or lost leaves between them.
"""The transparent audit log with two worker processes on one SQLite file: events
appended by both are one tree; the checkpoints they serve only grow, and every one
extends the one before (a consistency proof from the broker, checked here)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from e2e_support import SHARED_ENV, launch_broker, stop_broker

from tasklease.verify import verify_checkpoint, verify_event_inclusion, verify_log_consistency

pytestmark = pytest.mark.slow


def test_two_workers_keep_one_growing_log(tmp_path: Path) -> None:
    env = {**SHARED_ENV, "TASKLEASE_AUDIT_CHECKPOINT_INTERVAL": "0.2"}
    broker = launch_broker(tmp_path / "data", env, args=("--workers", "2"))
    try:
        headers = broker.admin_headers()
        (log_key,) = broker.get("/v1/audit/log-keys", headers=headers).json()["keys"]
        seen = []
        for round_ in range(4):
            for _ in range(3):  # connections land on either worker
                broker.register(["read:tickets:*"], task_id=f"round-{round_}")
            deadline = time.monotonic() + 20
            total = broker.get("/v1/audit/events?limit=1", headers=headers).json()["total"]
            while True:
                answer = broker.get("/v1/audit/checkpoint", headers=headers)
                if answer.status_code == 200 and int(answer.text.split("\n")[1]) >= total:
                    break
                assert time.monotonic() < deadline, answer.text
                time.sleep(0.1)
            seen.append(verify_checkpoint(answer.text, [log_key]))
        for old, new in zip(seen, seen[1:], strict=False):
            assert new.size > old.size
            proof = broker.get(
                f"/v1/audit/proof/consistency?first={old.size}&second={new.size}",
                headers=headers,
            ).json()["proof"]
            verify_log_consistency(old, new, proof)
        latest = seen[-1]
        events = broker.get(f"/v1/audit/events?limit={latest.size}", headers=headers).json()
        for event in events["events"]:
            proof = broker.get(
                f"/v1/audit/proof/inclusion?index={event['index']}&size={latest.size}",
                headers=headers,
            ).json()["proof"]
            assert verify_event_inclusion(event, proof, latest) == event["index"]
        assert "Traceback" not in broker.log()
    finally:
        stop_broker(broker)
