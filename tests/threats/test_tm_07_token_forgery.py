# Would fail if: the token decoder skipped or short-circuited the Ed25519 signature check
# (for example by trusting a cached header and payload without re-verifying the signature).
"""TM-07 — token forgery: an attacker edits a real token's claims, or signs claims of its
own choosing with a key it holds, to widen scope, extend a lifetime or become another agent.

Only the broker's signing key makes a token; any change to header or payload, a signature
from any other key, or a signature lifted from another token is refused wherever a token
is taken, audited with the precise reason, and leaves the genuine token untouched.
"""

from __future__ import annotations

import pytest
from e2e_support import RunningBroker, b64url, jwt_parts
from nacl.signing import SigningKey
from threat_support import bearer, compact, refused

pytestmark = pytest.mark.slow

SCOPE = ["read:tickets:4711"]


def _edited(token: str, **changes: object) -> str:
    header, payload = jwt_parts(token)
    payload.update(changes)
    signature = token.rsplit(".", 1)[1]
    unsigned = compact(header, payload, None)
    return unsigned[: unsigned.rindex(".") + 1] + signature


def _attempt(broker: RunningBroker, forged: str, reason: str = "bad signature") -> None:
    """Refused at the broker's own endpoint (audited with ``reason``) and by the
    resource-server check."""
    resp = broker.post("/v1/token/renew", headers=bearer(forged))
    event = refused(broker, resp, 401, "unauthorized", reason)
    assert resp.json()["detail"] == "token verification failed"  # the reason stays inside
    assert event["event_type"] == "token_auth_failed"
    assert not broker.is_valid(forged)


def test_edited_claims_keep_no_signature(broker: RunningBroker) -> None:
    agent = broker.register(SCOPE)
    victim = broker.register(["write:payments:*"])
    payload = jwt_parts(agent.access_token)[1]
    for changes in (
        {"scope": ["write:tickets:*"]},  # wider scope
        {"exp": payload["exp"] + 86_400},  # a longer life
        {"sub": victim.agent_id},  # somebody else
        {"delegation_chain": [], "rnc": 0},  # a cleaner history
    ):
        _attempt(broker, _edited(agent.access_token, **changes))
    # The genuine token was never the worse for it.
    assert broker.is_valid(agent.access_token)


def test_claims_signed_by_any_other_key_are_refused(broker: RunningBroker) -> None:
    agent = broker.register(SCOPE)
    header, payload = jwt_parts(agent.access_token)
    payload["scope"] = ["write:tickets:*"]
    attacker = SigningKey.generate()
    # Our kid, the attacker's signature.
    _attempt(broker, compact(header, payload, attacker))
    # The attacker's own kid (a thumbprint of its key) is simply unknown here.
    own_kid = b64url(bytes(attacker.verify_key))[:43]
    _attempt(broker, compact({**header, "kid": own_kid}, payload, attacker), "unknown kid")


def test_a_signature_lifted_from_another_token_is_refused(broker: RunningBroker) -> None:
    small = broker.register(SCOPE)
    large = broker.register(["write:payments:*"])
    spliced = large.access_token.rsplit(".", 1)[0] + "." + small.access_token.rsplit(".", 1)[1]
    _attempt(broker, spliced)


def test_a_token_of_another_kind_cannot_be_edited_into_an_agent_token(
    broker: RunningBroker,
) -> None:
    admin = broker.admin_token()
    header, payload = jwt_parts(admin)
    header["typ"] = "at+jwt"
    signature = admin.rsplit(".", 1)[1]
    unsigned = compact(header, payload, None)
    _attempt(broker, unsigned[: unsigned.rindex(".") + 1] + signature)
