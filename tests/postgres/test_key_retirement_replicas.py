# Would fail if: a replica with its own copy of the key directory kept trusting, serving or
# publishing a signing key another replica retired (its file still in that copy), or took
# it back when restarted.
"""`tasklease keys retire` on one PostgreSQL replica reaches a replica with its own copy of
the key directory (decision 252): the retirement is recorded in the database with its
event, and every replica drops the key at its next key refresh and from its start."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest
from e2e_support import RunningBroker, jwt_parts, stop_broker
from pg_e2e import start_replica, start_replica_with_own_keys

pytestmark = pytest.mark.slow

Replicas = Callable[..., list[RunningBroker]]


def _kids(replica: RunningBroker) -> set[str]:
    answer = replica.get("/.well-known/jwks.json")
    assert answer.status_code == 200, answer.text
    return {key["kid"] for key in answer.json()["keys"]}


def _bundle_kids(replica: RunningBroker) -> set[str]:
    answer = replica.get("/v1/federation/bundle")
    assert answer.status_code == 200, answer.text
    return {key["kid"] for key in answer.json()["keys"]}


def test_a_key_retired_on_one_replica_is_dropped_by_one_with_its_own_copy(
    pg_url: str, replicas: Replicas, tmp_path: Path
) -> None:
    [a] = replicas(pg_url, n=1)
    token = a.register(["read:data:1"]).access_token
    old_kid = jwt_parts(token)[0]["kid"]
    rotated = a.post("/v1/admin/keys/rotate", headers=a.admin_headers())
    assert rotated.status_code == 200, rotated.text
    new_kid = rotated.json()["kid"]
    # The second replica's key directory is a copy (cp -a) taken after the rotation.
    other = tmp_path / "other"
    b = start_replica_with_own_keys(pg_url, a.data_dir, other)
    replicas.track(b)  # type: ignore[attr-defined]
    assert _kids(b) == {new_kid, old_kid} and b.is_valid(token)
    a._admin_token = None  # signed by the key about to go
    retired = a.post(f"/v1/admin/keys/{old_kid}/retire", headers=a.admin_headers())
    assert retired.status_code == 200, retired.text
    deadline = time.monotonic() + 10.0
    while old_kid in _kids(b):
        assert time.monotonic() < deadline, "the replica with its own copy kept the key"
        time.sleep(0.1)
    assert not b.is_valid(token) and not a.is_valid(token)
    assert len(list((other / "keys").glob("signing-*.pem"))) == 2  # its file is still there
    time.sleep(2.5)  # two key refreshes and publications on each replica
    assert _bundle_kids(a) == _bundle_kids(b) == {new_kid}
    stop_broker(b)
    again = start_replica(pg_url, other)
    replicas.track(again)  # type: ignore[attr-defined]
    assert _kids(again) == {new_kid} and not again.is_valid(token)
    assert again.is_valid(again.register(["read:data:2"]).access_token)
