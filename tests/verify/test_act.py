"""Delegation as RFC 8693 ``act`` (section 4.1), checked by the verifier as the broker
checks it: a real chain human -> A -> B -> C over loopback HTTP. The token C holds names A
(the root delegator) as ``sub``, C as the current actor and B as the earlier one; the human
is the ``principal`` claim."""

from __future__ import annotations

import json
from typing import Any

import nacl.signing
import pytest
from cryptography.hazmat.primitives import serialization
from e2e_support import RunningBroker, jwt_parts
from verify_support import app_credentials

from tasklease.rules import jws
from tasklease.verify import InvalidToken, Verifier

pytestmark = pytest.mark.slow

# The HTTP launch-token API takes no principal: agents launched by the operator act for
# the principal "admin" (tests/agents covers named human principals in process).
ALICE = "admin"


def _delegate(broker: RunningBroker, token: str, to: str, scope: list[str]) -> str:
    answer = broker.delegate(token, to, scope)
    assert answer.status_code == 200, answer.text
    return str(answer.json()["access_token"])


def _resign(broker: RunningBroker, payload: dict[str, Any]) -> str:
    """``payload`` signed with the broker's own key: only the claim checks can refuse it."""
    kid, private = broker.signing_key()
    raw = private.private_bytes(
        serialization.Encoding.Raw,
        serialization.PrivateFormat.Raw,
        serialization.NoEncryption(),
    )
    data = json.dumps(payload, separators=(",", ":")).encode()
    return jws.encode(data, typ="at+jwt", kid=kid, key=nacl.signing.SigningKey(raw))


def test_a_three_hop_chain_exposes_principal_and_actors(broker: RunningBroker) -> None:
    a = broker.register(["read:data:*"])
    b = broker.register(["read:data:*"])
    c = broker.register(["read:data:*"])
    to_b = _delegate(broker, a.access_token, b.agent_id, ["read:data:*"])
    to_c = _delegate(broker, to_b, c.agent_id, ["read:data:42"])
    with Verifier(broker.url, audience="svc-a", credentials=app_credentials(broker)) as verifier:
        root = verifier.verify(a.access_token)
        assert root.principal == ALICE and root.actors == () and root.depth == 0
        hop = verifier.verify(to_c)
        assert hop.sub == c.agent_id and hop.depth == 2
        assert hop.principal == ALICE
        assert hop.actors == (c.agent_id, b.agent_id)
        assert hop.claims["sub"] == a.agent_id
        assert hop.claims["act"] == {"sub": c.agent_id, "act": {"sub": b.agent_id}}
        assert [h.agent for h in hop.delegation_chain] == [a.agent_id, b.agent_id]
        assert verifier.verify(to_c).actors == hop.actors  # from the cache alike

        # Same token, claims tampered and re-signed with the broker's key: sub and the act
        # chain must agree with delegation_chain, as at the broker.
        _, payload = jwt_parts(to_c)
        cases = {
            "act chain disagrees with the delegation chain": {
                **payload,
                "act": {"sub": c.agent_id, "act": {"sub": a.agent_id}},
            },
            "act chain disagrees with the delegation chain ": {**payload, "sub": b.agent_id},
            "act chain disagrees with the delegation chain  ": {
                **payload,
                "act": {"sub": c.agent_id, "act": {"sub": b.agent_id, "act": {"sub": ALICE}}},
            },
            "act claim malformed or deeper than the limit": {
                **payload,
                "act": {"sub": c.agent_id, "act": "x"},
            },
            "delegated token without an act claim": {
                k: v for k, v in payload.items() if k != "act"
            },
        }
        _, root_payload = jwt_parts(a.access_token)
        cases["act claim on a token that is not delegated"] = {
            **root_payload,
            "act": {"sub": a.agent_id, "act": {"sub": ALICE}},
        }
        for reason, forged in cases.items():
            with pytest.raises(InvalidToken) as caught:
                verifier.verify(_resign(broker, forged))
            assert caught.value.reason == reason.strip()
        # An act nested deeper than the depth limit allows is refused before comparing.
        deep: dict[str, Any] = {"sub": ALICE}
        for i in range(8):
            deep = {"sub": f"agent-{i}", "act": deep}
        with pytest.raises(InvalidToken) as caught:
            verifier.verify(_resign(broker, {**payload, "act": deep}))
        assert caught.value.reason == "act claim malformed or deeper than the limit"

    with Verifier(
        broker.url,
        audience="svc-a",
        credentials=app_credentials(broker),
        max_delegation_depth=1,
    ) as shallow:
        with pytest.raises(InvalidToken) as caught:
            shallow.verify(to_c)
        assert caught.value.reason == "delegation chain longer than the depth limit"
        assert shallow.verify(to_b).actors == (b.agent_id,)
