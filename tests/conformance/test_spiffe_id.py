"""SPIFFE IDs (SPIFFE standard, SPIFFE-ID.md).

Agent identities issued by the running broker, cross-checked with the SPIFFE project's
Python library (``spiffe``), and the refusals of the inputs that would make an invalid ID.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
from conformance_support import Kit, parts
from spiffe import SpiffeId

NOT_APPLICABLE = {
    "X509-SVID": "the broker issues no certificates: an agent's SPIFFE ID is its token's "
    "subject; mTLS client certificates come from the deployment's own CA",
    "JWT-SVID": "JWT-SVIDs must be signed with RS, ES or PS algorithms (no EdDSA) and carry "
    "no other header than alg, kid, typ JWT/JOSE; agent tokens are at+jwt (RFC 9068) EdDSA "
    "tokens: one token cannot be both",
}

_TRUST_DOMAIN = re.compile(r"[a-z0-9._-]{1,255}")
_SEGMENT = re.compile(r"[A-Za-z0-9._-]+")


def test_spiffe_id_s2_agent_ids_are_spiffe_ids(kit: Kit) -> None:
    """§2: `spiffe://<trust domain>/<path>`; the SPIFFE library parses every agent ID to the
    configured trust domain, with no query, fragment, port or user info."""
    agent = kit.register()
    parsed = SpiffeId(agent.agent_id)
    assert str(parsed.trust_domain) == "tasklease.local"
    assert str(parsed) == agent.agent_id
    assert not any(c in agent.agent_id for c in "?#@") and ":" not in agent.agent_id[9:]
    assert parts(agent.token)[1]["sub"] == agent.agent_id


def test_spiffe_id_s2_1_trust_domain_characters(kit: Kit) -> None:
    """§2.1: the trust domain is lowercase letters, digits, `.`, `-` and `_`."""
    trust_domain = kit.register().agent_id[len("spiffe://") :].split("/", 1)[0]
    assert _TRUST_DOMAIN.fullmatch(trust_domain)


def test_spiffe_id_s2_1_an_invalid_trust_domain_is_refused_at_start(start_broker: Any) -> None:
    """§2.1: a broker configured with an invalid trust domain does not start."""
    with pytest.raises(RuntimeError, match="trust"):
        start_broker({"TASKLEASE_TRUST_DOMAIN": "Tasklease.Local"})


def test_spiffe_id_s2_2_path_segments(kit: Kit) -> None:
    """§2.2: segments of `[A-Za-z0-9.-_]`, none empty, `.` or `..`, no trailing `/`."""
    path = kit.register().agent_id.split("/", 3)[3]
    for segment in path.split("/"):
        assert _SEGMENT.fullmatch(segment) and segment not in (".", "..")


@pytest.mark.parametrize("segment", [".", "..", "a/b", "a%2Fb", "", "ä", "a b", "x" * 129])
def test_spiffe_id_s2_2_inputs_that_would_break_the_path_are_refused(
    kit: Kit, segment: str
) -> None:
    """§2.2: an `orch_id` or `task_id` that would make an invalid path segment is refused
    (400), never escaped into one."""
    body, _ = kit.broker.register_body(kit.launch(), ["read:data:42"])
    for field in ("orch_id", "task_id"):
        answer = kit.post("/v1/register", json={**body, field: segment})
        assert answer.status_code == 400, (field, segment)


def test_spiffe_id_s2_3_length_bound(kit: Kit) -> None:
    """§2.3: at most 2048 bytes: the longest segments allowed still make a short ID."""
    body, _ = kit.broker.register_body(kit.launch(), ["read:data:42"])
    answer = kit.post("/v1/register", json={**body, "orch_id": "o" * 128, "task_id": "t" * 128})
    assert answer.status_code == 200, answer.text
    agent_id = answer.json()["agent_id"]
    assert len(agent_id.encode()) <= 2048
    SpiffeId(agent_id)
