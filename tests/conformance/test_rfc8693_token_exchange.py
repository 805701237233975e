"""RFC 8693: OAuth 2.0 Token Exchange.

The ``act`` claim of delegated tokens, read the way an RFC 8693 consumer reads it, and the
token endpoint ``POST /v1/oauth/token`` (form-encoded, as OAuth clients send it).
"""

from __future__ import annotations

from typing import Any

from conformance_support import Kit, parts

NOT_APPLICABLE = {
    "s4_4 may_act": "who may act is decided by the broker at delegation (the delegate must be "
    "a registered agent in good standing) and recorded in the chain; no may_act is issued",
    "s3 token types other than access_token": "only access tokens are issued and accepted "
    "(no refresh, ID, SAML or generic JWT tokens)",
}

GRANT = "urn:ietf:params:oauth:grant-type:token-exchange"
ACCESS = "urn:ietf:params:oauth:token-type:access_token"


def rfc8693_view(claims: dict[str, Any]) -> tuple[str, str | None, list[str]]:
    """What an RFC 8693 consumer learns of a token: the subject (``sub``), the current
    actor (the outermost ``act``) and the earlier actors (each nested ``act``), written
    from section 4.1 alone."""
    actors: list[str] = []
    level = claims.get("act")
    while isinstance(level, dict):
        actors.append(level["sub"])
        level = level.get("act")
    return claims["sub"], (actors[0] if actors else None), actors[1:]


def test_rfc8693_s4_1_act_names_the_current_actor_and_nests_earlier_ones(kit: Kit) -> None:
    """§4.1: `sub` is the subject acted for; the outermost `act` is the current actor (the
    holder); nested `act`s are earlier actors; no actor is the subject itself."""
    a, b, c = kit.register(), kit.register(), kit.register()
    to_b = kit.delegate(a, b)
    to_c = kit.delegate(kit_agent(b, to_b), c)
    subject, current, earlier = rfc8693_view(parts(to_c)[1])
    assert (subject, current, earlier) == (a.agent_id, c.agent_id, [b.agent_id])
    assert rfc8693_view(parts(to_b)[1]) == (a.agent_id, b.agent_id, [])
    claims = parts(to_c)[1]
    assert claims["principal"] not in (current, *earlier)  # the human is no actor


def test_rfc8693_s4_1_a_token_not_derived_has_no_act(kit: Kit) -> None:
    """§4.1: an agent's own token names no actor: the agent is its subject."""
    agent = kit.register()
    assert rfc8693_view(parts(agent.token)[1]) == (agent.agent_id, None, [])


def test_rfc8693_s4_1_act_is_the_same_in_introspection(kit: Kit) -> None:
    """§4.1 with RFC 7662: introspection reports the same `sub` and `act`."""
    a, b = kit.register(), kit.register()
    to_b = kit.delegate(a, b)
    answer = kit.post("/v1/introspect", data={"token": to_b}, headers=kit.admin()).json()
    assert rfc8693_view(answer) == (a.agent_id, b.agent_id, [])


def test_rfc8693_s4_2_s4_3_scope_is_space_delimited_and_client_id_present(kit: Kit) -> None:
    """§4.2 and §4.3: `scope` is a space-delimited string; `client_id` names the client."""
    claims = parts(kit.register(["read:data:42", "write:data:42"]).token)[1]
    assert claims["scope"] == "read:data:42 write:data:42"
    assert isinstance(claims["client_id"], str) and claims["client_id"]


def kit_agent(agent: Any, token: str) -> Any:
    """``agent`` holding ``token`` instead of its own."""
    return type(agent)(agent.agent_id, token, agent.key, agent.dpop, agent.token_type)


# --- the token endpoint -----------------------------------------------------------------


def _exchange(kit: Kit, **form: str) -> Any:
    return kit.post("/v1/oauth/token", data={"grant_type": GRANT, **form})


def test_rfc8693_s2_2_1_a_successful_exchange(kit: Kit) -> None:
    """§2.1 and §2.2.1: a form-encoded request with `subject_token` and its type answers
    `access_token`, `issued_token_type`, `token_type` and `expires_in` (and `scope`)."""
    agent = kit.register(["read:data:42", "write:data:42"])
    answer = _exchange(
        kit,
        subject_token=agent.token,
        subject_token_type=ACCESS,
        scope="read:data:42",
        resource="https://orders.example/api",
    )
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["issued_token_type"] == ACCESS and body["token_type"] == "Bearer"
    assert isinstance(body["expires_in"], int) and body["scope"] == "read:data:42"
    claims = parts(body["access_token"])[1]
    assert claims["aud"] == ["https://orders.example/api"] and claims["scope"] == "read:data:42"
    assert answer.headers["cache-control"] == "no-store"


def test_rfc8693_s2_2_1_a_delegated_subject_keeps_its_act(kit: Kit) -> None:
    """§2.2.1 with §4.1: narrowing a delegated token keeps the RFC 8693 shape."""
    a, b = kit.register(), kit.register()
    to_b = kit.delegate(a, b)
    answer = _exchange(kit, subject_token=to_b, subject_token_type=ACCESS)
    assert answer.status_code == 200, answer.text
    assert rfc8693_view(parts(answer.json()["access_token"])[1]) == (a.agent_id, b.agent_id, [])


def test_rfc8693_s2_2_2_errors_are_invalid_request_or_invalid_target(kit: Kit) -> None:
    """§2.2.2: a malformed request is `invalid_request` (400), an unusable target
    `invalid_target` (400)."""
    agent = kit.register(["read:data:42"], launch={"resource": ["https://orders.example/api"]})
    cases = {
        "invalid_request": [
            {"subject_token": agent.token},  # no subject_token_type
            {"subject_token_type": ACCESS},  # no subject_token
            {
                "subject_token": agent.token,
                "subject_token_type": ACCESS,
                "actor_token": agent.token,
            },  # actor_token without actor_token_type
        ],
        "invalid_target": [
            {
                "subject_token": agent.token,
                "subject_token_type": ACCESS,
                "resource": "https://payments.example/api",
            },
            {"subject_token": agent.token, "subject_token_type": ACCESS, "resource": "x"},
        ],
    }
    for error, forms in cases.items():
        for form in forms:
            answer = _exchange(kit, **form)
            assert answer.status_code == 400, (form, answer.text)
            assert answer.json()["error"] == error, form
