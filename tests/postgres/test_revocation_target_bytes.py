"""A revocation target is bounded in bytes, as PostgreSQL indexes it.

The bound was 2,048 characters. A target of that many characters outside ASCII is up to
8 KiB in UTF-8, beyond what a PostgreSQL B-tree index row may hold (2,704 bytes): the
insert failed inside the revocation's transaction and the operator got a 500, at every
level (the unique (level, target) index; a task's target also fills the audit event's
indexed ``task_id``). A workload's attested subject, which becomes a lineage id only
when a revocation could name it, was measured the same way.
"""

from __future__ import annotations

import random
from typing import Any

import pytest

from tasklease.core.records import MAX_TARGET

LEVELS = ("token", "agent", "task", "chain")


def _han(n: int, seed: int) -> str:
    """``n`` random CJK ideographs (three UTF-8 bytes each): text no index compresses."""
    rnd = random.Random(seed)
    return "".join(chr(rnd.randrange(0x4E00, 0x9FFF)) for _ in range(n))


@pytest.mark.parametrize("level", LEVELS)
def test_a_target_of_many_bytes_is_refused_not_a_500(one_replica: Any, level: str) -> None:
    broker = one_replica  # shared by the levels: a revocation is one (level, target)
    headers = broker.admin_headers()
    # As many characters as the bound allows, but three times as many bytes.
    too_big = _han(MAX_TARGET, seed=1)
    refused = broker.post("/v1/revoke", json={"level": level, "target": too_big}, headers=headers)
    assert refused.status_code == 400, refused.text
    assert refused.json()["detail"] == "target is too long"
    # Just within the bound, in bytes: written, and listed.
    fits = _han(MAX_TARGET // 3, seed=2)
    written = broker.post("/v1/revoke", json={"level": level, "target": fits}, headers=headers)
    assert written.status_code == 200, written.text
    listed = broker.get("/v1/admin/revocations", params={"limit": 500}, headers=headers)
    assert listed.status_code == 200, listed.text
    assert fits in {entry["target"] for entry in listed.json()["revocations"]}
