"""Mutual authentication: the broker-mediated handshake and offline workload proofs."""

from __future__ import annotations

import hashlib
import json
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
from agents_support import CTX, AgentHandle, Env, b64
from nacl.signing import SigningKey

from tasklease.core.liveness import heartbeat_signing_input
from tasklease.core.mutual import (
    KIND_OFFER,
    ProofRejected,
    transcript,
    verify_peer,
    verify_receipt,
)
from tasklease.rules import jws as _jws
from tasklease.rules.binding import MemoryProofLedger
from tasklease.rules.wimse import make_wpt

NA = "a" * 32
NB = "b" * 32


def _sign(agent: AgentHandle, role: str, ticket: dict[str, Any], nb: str = NB) -> str:
    message = transcript(role, ticket["hid"], ticket["ini"], ticket["rsp"], ticket["na"], nb)
    return b64(agent.key.sign(message).signature)


def _claims(ticket: str) -> dict[str, Any]:
    return _jws.decode_unverified(ticket)[1]


def _initiate(env: Env, a: AgentHandle, b: AgentHandle) -> httpx.Response:
    return env.http.post(
        "/v1/mutual/initiate",
        headers=a.auth(),
        json={"responder_id": b.agent_id, "initiator_nonce": NA},
    )


def _respond(env: Env, b: AgentHandle, offer: str, signer: AgentHandle | None = None) -> Any:
    ticket = _claims(offer)
    return env.http.post(
        "/v1/mutual/respond",
        headers=b.auth(),
        json={
            "offer": offer,
            "responder_nonce": NB,
            "signature": _sign(signer or b, "responder", ticket),
        },
    )


def _complete(env: Env, a: AgentHandle, answer: str, signer: AgentHandle | None = None) -> Any:
    ticket = _claims(answer)
    return env.http.post(
        "/v1/mutual/complete",
        headers=a.auth(),
        json={"answer": answer, "signature": _sign(signer or a, "initiator", ticket)},
    )


def _failures(env: Env) -> list[str]:
    return [e.detail for e in env.audit("mutual_auth_failed", "denied")]


def test_transcript_known_answer() -> None:
    message = transcript("initiator", "h1", "spiffe://td/a", "spiffe://td/b", NA, NB)
    assert message == (
        b"tasklease-mutual-v1\n"
        b'["initiator","h1","spiffe://td/a","spiffe://td/b",'
        b'"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa","bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"]'
    )
    assert hashlib.sha256(message).hexdigest() == hashlib.sha256(message).hexdigest()
    with pytest.raises(ValueError, match="role"):
        transcript("both", "h1", "a", "b", NA, NB)


def test_two_agents_complete_the_handshake(env: Env) -> None:
    a = env.register("task-a", ["read:data:*"])
    b = env.register("task-b", ["write:reports:*"])
    offer = _initiate(env, a, b).json()
    assert offer["expires_in"] == 30
    responded = _respond(env, b, offer["offer"])
    assert responded.status_code == 200, responded.text
    assert responded.json()["initiator"] == {"agent_id": a.agent_id, "scope": ["read:data:*"]}
    completed = _complete(env, a, responded.json()["answer"])
    assert completed.status_code == 200, completed.text
    body = completed.json()
    assert body["responder"] == {"agent_id": b.agent_id, "scope": ["write:reports:*"]}
    # B checks the receipt A forwards, offline, with the broker's JWKS.
    keys = env.http.get("/.well-known/jwks.json").json()["keys"]
    from nacl.signing import VerifyKey

    by_kid = {k["kid"]: VerifyKey(_jws.b64url_decode(k["x"])) for k in keys}
    seen = verify_receipt(
        body["receipt"],
        resolve_key=by_kid.get,
        issuer=env.broker.config.issuer,
        me=b.agent_id,
        handshake_id=offer["handshake_id"],
        responder_nonce=NB,
        now=env.clock.now(),
    )
    assert seen.peer_id == a.agent_id and seen.peer_scope == ("read:data:*",)
    with pytest.raises(ProofRejected):
        verify_receipt(
            body["receipt"],
            resolve_key=by_kid.get,
            issuer=env.broker.config.issuer,
            me=a.agent_id,
            handshake_id=offer["handshake_id"],
            responder_nonce=NB,
            now=env.clock.now(),
        )
    assert [e.event_type for e in env.audit("mutual_auth_completed")] == ["mutual_auth_completed"]


def test_replayed_steps_fail_and_are_audited(env: Env) -> None:
    a = env.register("task-a")
    b = env.register("task-b")
    offer = _initiate(env, a, b).json()["offer"]
    answer = _respond(env, b, offer).json()["answer"]
    assert _respond(env, b, offer).status_code == 401
    assert _complete(env, a, answer).status_code == 200
    assert _complete(env, a, answer).status_code == 401
    assert sum("replayed" in d for d in _failures(env)) == 2


def test_a_step_sent_several_times_at_once_is_answered_once(env: Env) -> None:
    # Each copy's checks pass before any has spent the step's marker: only the marker's
    # record, in the store, tells them apart.
    a = env.register("task-a")
    b = env.register("task-b")
    offer = _initiate(env, a, b).json()["offer"]
    with ThreadPoolExecutor(6) as pool:
        answers = list(pool.map(lambda _i: _respond(env, b, offer), range(6)))
    assert sorted(r.status_code for r in answers) == [200] + [401] * 5
    assert sum("replayed" in d for d in _failures(env)) == 5
    assert len(env.audit("mutual_auth_responded")) == 1


def test_reflection_fails_and_is_audited(env: Env) -> None:
    a = env.register("task-a")
    b = env.register("task-b")
    # A names itself as responder.
    own = env.http.post(
        "/v1/mutual/initiate",
        headers=a.auth(),
        json={"responder_id": a.agent_id, "initiator_nonce": NA},
    )
    assert own.status_code == 401
    # A answers its own offer to B (with its own key and token).
    offer = _initiate(env, a, b).json()["offer"]
    assert _respond(env, a, offer).status_code == 401
    # A replays its initiator-role signature as the responder's: the role differs.
    ticket = _claims(offer)
    wrong_role = transcript("initiator", ticket["hid"], ticket["ini"], ticket["rsp"], NA, NB)
    reflected = env.http.post(
        "/v1/mutual/respond",
        headers=b.auth(),
        json={
            "offer": offer,
            "responder_nonce": NB,
            "signature": b64(b.key.sign(wrong_role).signature),
        },
    )
    assert reflected.status_code == 401
    details = _failures(env)
    assert sum("reflection" in d for d in details) == 2
    assert any("signature does not verify" in d for d in details)


def test_responder_must_be_the_registered_holder(env: Env) -> None:
    a = env.register("task-a")
    b = env.register("task-b")
    c = env.register("task-c")
    offer = _initiate(env, a, b).json()["offer"]
    # C, another registered agent, answers in B's place with its own token.
    assert _respond(env, c, offer).status_code == 401
    # Someone holding B's bearer token but not B's key.
    thief = AgentHandle(b.agent_id, b.token, SigningKey.generate())
    assert _respond(env, thief, offer).status_code == 401
    details = _failures(env)
    assert any("is not the responder" in d for d in details)
    assert any("not its holder" in d for d in details)
    # The offer is still usable by the real B (the failures spent nothing).
    assert _respond(env, b, offer).status_code == 200


def test_revoked_or_expired_party_fails(env: Env) -> None:
    a = env.register("task-a")
    b = env.register("task-b")
    offer = _initiate(env, a, b).json()["offer"]
    env.http.post(
        "/v1/revoke",
        headers={"Authorization": f"Bearer {env.admin_token()}"},
        json={"level": "agent", "target": a.agent_id},
    )
    assert _respond(env, b, offer).status_code == 401  # the initiator was revoked
    assert any("agent is revoked" in d for d in _failures(env))
    # Expired handshake: the offer lives 30 s.
    c = env.register("task-c")
    d = env.register("task-d")
    late = _initiate(env, c, d).json()["offer"]
    # Dead from the instant of its expiry, as every credential (no leeway on exp).
    env.clock.set(float(_jws.decode_unverified(late)[1]["exp"]))
    assert _respond(env, d, late).status_code == 401
    assert any("handshake expired" in x for x in _failures(env))
    # Expired bearer: the responder's token is past its life (default 300 s + skew).
    e = env.register("task-e")
    f = env.register("task-f")
    env.clock.advance(200)
    offer_ef = _initiate(env, e, f).json()["offer"]
    env.clock.advance(140)
    assert _respond(env, f, offer_ef).status_code == 401
    assert env.audit("token_auth_failed", "denied")


def test_transcript_from_another_handshake_fails(env: Env) -> None:
    a = env.register("task-a")
    b = env.register("task-b")
    first = _claims(_initiate(env, a, b).json()["offer"])
    second = _initiate(env, a, b).json()["offer"]
    lifted = env.http.post(
        "/v1/mutual/respond",
        headers=b.auth(),
        json={"offer": second, "responder_nonce": NB, "signature": _sign(b, "responder", first)},
    )
    assert lifted.status_code == 401
    answer = _respond(env, b, second).json()["answer"]
    other = _claims(_respond(env, b, _initiate(env, a, b).json()["offer"]).json()["answer"])
    stolen = env.http.post(
        "/v1/mutual/complete",
        headers=a.auth(),
        json={"answer": answer, "signature": _sign(a, "initiator", other)},
    )
    assert stolen.status_code == 401
    assert sum("another handshake" in d for d in _failures(env)) == 2


def test_tickets_are_not_tokens(env: Env) -> None:
    a = env.register("task-a")
    b = env.register("task-b")
    offer = _initiate(env, a, b).json()["offer"]
    assert env.validate(offer) is None
    assert env.http.post("/v1/token/renew", headers=a.auth(offer)).status_code == 401
    # An offer is not an answer.
    assert _complete(env, a, offer).status_code == 401


# --- offline: workload proof tokens ------------------------------------------------------


def _jwks_resolver(env: Env) -> Any:
    from nacl.signing import VerifyKey

    keys = env.http.get("/.well-known/jwks.json").json()["keys"]
    return {k["kid"]: VerifyKey(_jws.b64url_decode(k["x"])) for k in keys}.get


def _wit(env: Env, agent: AgentHandle) -> str:
    answer = env.http.post("/v1/workload/identity", headers=agent.auth())
    assert answer.status_code == 200, answer.text
    return str(answer.json()["workload_identity_token"])


def test_offline_peers_verify_each_other_with_the_jwks(env: Env) -> None:
    # WIMSE: each agent sends its access token, its WIT and a WPT for the request's URI.
    a = env.register("task-a", ["read:data:*"])
    b = env.register("task-b", ["write:data:*"])
    resolve = _jwks_resolver(env)
    now = env.clock.now()
    cache_a, cache_b = MemoryProofLedger(), MemoryProofLedger()
    cfg = env.broker.config
    wit_a, wit_b = _wit(env, a), _wit(env, b)
    at_b, at_a = "https://b.example/work", "https://a.example/work"
    proof_a = make_wpt(a.key, wit=wit_a, target_uri=at_b, now=now, access_token=a.token)
    proof_b = make_wpt(b.key, wit=wit_b, target_uri=at_a, now=now, access_token=b.token)
    seen_by_b = verify_peer(
        a.token, wit_a, proof_a, resolve_key=resolve, issuer=cfg.issuer, target_uri=at_b,
        now=now, replay=cache_b,
    )  # fmt: skip
    seen_by_a = verify_peer(
        b.token, wit_b, proof_b, resolve_key=resolve, issuer=cfg.issuer, target_uri=at_a,
        now=now, replay=cache_a,
    )  # fmt: skip
    assert seen_by_b["sub"] == a.agent_id and seen_by_b["scope"] == "read:data:*"
    assert seen_by_a["sub"] == b.agent_id
    assert _jws.decode_unverified(proof_a)[0] == {"alg": "EdDSA", "typ": "wpt+jwt"}
    assert _jws.decode_unverified(wit_a)[0]["typ"] == "wit+jwt"

    def check(proof: str, token: str = a.token, at: float = now, wit: str = wit_a) -> None:
        verify_peer(
            token, wit, proof, resolve_key=resolve, issuer=cfg.issuer, target_uri=at_b,
            now=at, replay=cache_b,
        )  # fmt: skip

    def wpt(**changes: Any) -> str:
        args: dict[str, Any] = {
            "wit": wit_a, "target_uri": at_b, "now": now, "access_token": a.token,
        }  # fmt: skip
        args.update(changes)
        key = args.pop("key", a.key)
        return make_wpt(key, **args)

    with pytest.raises(ProofRejected, match="replayed"):
        check(proof_a)
    with pytest.raises(ProofRejected, match="target URI"):
        check(wpt(target_uri="https://elsewhere.example/work"))
    with pytest.raises(ProofRejected, match="ath"):
        check(wpt(access_token=b.token))
    with pytest.raises(ProofRejected, match="wth"):
        check(wpt(wit=wit_b))
    with pytest.raises(ProofRejected, match="another workload"):
        check(wpt(wit=wit_b, key=b.key), wit=wit_b)
    with pytest.raises(ProofRejected, match="WIT's key"):  # signed by another key
        check(wpt(key=b.key))
    with pytest.raises(ProofRejected, match="expired"):
        check(wpt(), at=now + 120)
    # A proof is dead at its exp, not a skew later.
    with pytest.raises(ProofRejected, match="expired"):
        check(wpt(ttl=10), at=int(now) + 10)
    check(wpt(ttl=10), at=int(now) + 9)
    # So is the access token it rides on.
    with pytest.raises(ProofRejected, match="access token expired"):
        exp = _jws.decode_unverified(a.token)[1]["exp"]
        check(wpt(now=exp), at=exp)


def _delegated(env: Env, delegator: Any, delegate: Any) -> str:
    """A token ``delegator`` hands ``delegate``."""
    answer = env.http.post(
        "/v1/delegate",
        headers=delegator.auth(),
        json={"delegate_to": delegate.agent_id, "scope": ["read:data:*"], "ttl": 300},
    )
    assert answer.status_code == 200, answer.text
    return str(answer.json()["access_token"])


def _declare_done(env: Env, agent: Any, nonce: str) -> None:
    """``agent`` declares itself done with its own token (a signed heartbeat): released."""
    now = int(env.clock.now())
    message = heartbeat_signing_input(agent.agent_id, _claims(agent.token)["jti"], now, nonce, True)
    done = env.http.post(
        "/v1/heartbeat",
        headers=agent.auth(),
        json={
            "timestamp": now,
            "jti": nonce,
            "signature": b64(agent.key.sign(message).signature),
            "done": True,
        },
    )
    assert done.json()["status"] == "released", done.text


def test_a_released_holder_gets_no_workload_identity(env: Env) -> None:
    # B declared itself done; a token C delegated to it still validates until its exp,
    # but the broker no longer states B's identity with it, as the handshake no longer
    # accepts B.
    c = env.register("task-c")
    b = env.register("task-b")
    held = _delegated(env, c, b)
    assert _wit(env, AgentHandle(b.agent_id, held, b.key))
    _declare_done(env, b, "p" * 16)
    refused = env.http.post("/v1/workload/identity", headers=b.auth(held))
    assert refused.status_code == 403
    denial = refused.json()["denial_id"]
    events = [
        e for e in env.audit("workload_identity_denied", "denied") if e.detail.endswith(denial)
    ]
    assert len(events) == 1 and "released" in events[0].detail
    assert len(env.audit("workload_identity_issued")) == 1


def _revoke(env: Env, agent: AgentHandle) -> None:
    revoked = env.http.post(
        "/v1/revoke",
        headers={"Authorization": f"Bearer {env.admin_token()}"},
        json={"level": "agent", "target": agent.agent_id},
    )
    assert revoked.status_code == 200, revoked.text


def test_a_responder_revoked_after_answering_is_not_vouched_for(env: Env) -> None:
    # B answered in good standing, then was revoked: A's complete must not be told B
    # proved anything, nor get a receipt naming it.
    a = env.register("task-a")
    b = env.register("task-b")
    answer = _respond(env, b, _initiate(env, a, b).json()["offer"]).json()["answer"]
    _revoke(env, b)
    completed = _complete(env, a, answer)
    assert completed.status_code == 401
    assert "receipt" not in completed.json()
    failures = _failures(env)
    assert any(f"responder {b.agent_id}: agent is revoked" in d for d in failures)
    assert env.audit("mutual_auth_completed") == []


def test_no_offer_names_a_responder_out_of_standing(env: Env) -> None:
    a = env.register("task-a")
    b = env.register("task-b")
    _revoke(env, b)
    revoked = _initiate(env, a, b)
    assert revoked.status_code == 401 and "offer" not in revoked.json()
    ghost = AgentHandle(b.agent_id.replace("task-b", "task-z"), b.token, b.key)
    unknown = _initiate(env, a, ghost)
    assert unknown.status_code == 401 and "offer" not in unknown.json()
    failures = _failures(env)
    assert any(f"initiate refused: responder {b.agent_id}: agent is revoked" in d for d in failures)
    assert any(f"responder {ghost.agent_id}: agent not registered" in d for d in failures)
    assert env.audit("mutual_auth_initiated") == []


def test_a_released_holder_cannot_start_a_handshake(env: Env) -> None:
    # A token delegated to B stays valid after B declared itself done; B's standing does
    # not, and no offer is signed for it.
    c = env.register("task-c")
    b = env.register("task-b")
    held = _delegated(env, c, b)
    _declare_done(env, b, "q" * 16)
    started = _initiate(env, AgentHandle(b.agent_id, held, b.key), c)
    assert started.status_code == 401 and "offer" not in started.json()
    assert any(f"initiator {b.agent_id}: " in d and "released" in d for d in _failures(env))
    assert env.audit("mutual_auth_initiated") == []


def test_only_the_initiator_completes_its_handshake(env: Env) -> None:
    # C has A's valid initiator signature (seen on the way to the broker) but is not A:
    # the receipt, which B would take as A's proof, is never C's.
    a = env.register("task-a")
    b = env.register("task-b")
    c = env.register("task-c")
    answer = _respond(env, b, _initiate(env, a, b).json()["offer"]).json()["answer"]
    ticket = _claims(answer)
    lifted = env.http.post(
        "/v1/mutual/complete",
        headers=c.auth(),
        json={"answer": answer, "signature": _sign(a, "initiator", ticket, ticket["nb"])},
    )
    assert lifted.status_code == 401 and "receipt" not in lifted.json()
    assert any(f"{c.agent_id} is not the initiator" in d for d in _failures(env))
    assert _complete(env, a, answer).status_code == 200  # the refusal spent nothing


def test_an_offer_of_another_issuer_is_refused(env: Env) -> None:
    # Signed with this broker's key but issued under another name: not this broker's.
    a = env.register("task-a")
    b = env.register("task-b")
    ticket = _claims(_initiate(env, a, b).json()["offer"])
    foreign = {**ticket, "iss": "https://other.example"}
    offer = env.broker.keyring.sign(json.dumps(foreign).encode(), KIND_OFFER)
    assert _respond(env, b, offer).status_code == 401
    assert any("ticket issuer mismatch" in d for d in _failures(env))
    assert env.audit("mutual_auth_responded") == []


def test_a_step_stays_spent_while_its_ticket_lives(env: Env) -> None:
    # The single-use markers outlive the tickets they spend: pruning the store one second
    # before the ticket dies must not make the step usable again.
    a = env.register("task-a")
    b = env.register("task-b")
    offer = _initiate(env, a, b).json()["offer"]
    answer = _respond(env, b, offer).json()["answer"]
    assert _complete(env, a, answer).status_code == 200
    env.clock.set(float(_claims(offer)["exp"] - 1))
    env.broker.store.prune(env.clock.now())
    assert _respond(env, b, offer).status_code == 401
    assert _complete(env, a, answer).status_code == 401
    assert sum("replayed" in d for d in _failures(env)) == 2
    assert len(env.audit("mutual_auth_completed")) == 1


def test_a_receipt_lives_the_handshake_ttl(env: Env) -> None:
    a = env.register("task-a")
    b = env.register("task-b")
    offer = _initiate(env, a, b).json()
    answer = _respond(env, b, offer["offer"]).json()["answer"]
    receipt = _complete(env, a, answer).json()["receipt"]
    done = int(env.clock.now())
    assert _claims(receipt)["exp"] == done + offer["expires_in"]

    def check(now: float) -> None:
        verify_receipt(
            receipt,
            resolve_key=_jwks_resolver(env),
            issuer=env.broker.config.issuer,
            me=b.agent_id,
            handshake_id=offer["handshake_id"],
            responder_nonce=NB,
            now=now,
        )

    check(done + offer["expires_in"] - 1)
    with pytest.raises(ProofRejected, match="expired"):
        check(done + offer["expires_in"])


def test_a_receipt_binds_its_issuer_handshake_nonce_and_responder(env: Env) -> None:
    a = env.register("task-a")
    b = env.register("task-b")
    offer = _initiate(env, a, b).json()
    answer = _respond(env, b, offer["offer"]).json()["answer"]
    receipt = _complete(env, a, answer).json()["receipt"]
    right: dict[str, Any] = {
        "resolve_key": _jwks_resolver(env),
        "issuer": env.broker.config.issuer,
        "me": b.agent_id,
        "handshake_id": offer["handshake_id"],
        "responder_nonce": NB,
        "now": env.clock.now(),
    }
    assert verify_receipt(receipt, **right).peer_id == a.agent_id
    for change, reason in (
        ({"issuer": "https://other.example"}, "issuer"),
        ({"handshake_id": "f" * 32}, "another handshake"),
        ({"responder_nonce": "c" * 32}, "our nonce"),
        ({"me": a.agent_id}, "another responder"),
    ):
        with pytest.raises(ProofRejected, match=reason):
            verify_receipt(receipt, **{**right, **change})


def test_asking_again_with_the_same_token_writes_no_new_event(env: Env) -> None:
    # Each WIT issued wrote a permanent event, and nothing bounded the asking: an agent
    # calling in a loop filled the audit log. One token gets one WIT (its one event);
    # another token (a renewal, itself audited) or another signing key gets a new one.
    a = env.register("task-a")
    first = _wit(env, a)
    for _ in range(20):
        assert _wit(env, a) == first
    assert len(env.audit("workload_identity_issued")) == 1

    renewed = env.http.post("/v1/token/renew", headers=a.auth())
    assert renewed.status_code == 200, renewed.text
    b = AgentHandle(a.agent_id, renewed.json()["access_token"], a.key)
    second = _wit(env, b)
    assert second != first and _wit(env, b) == second
    assert len(env.audit("workload_identity_issued")) == 2

    env.broker.rotate_signing_key(env.admin_claims(), CTX)
    third = _wit(env, b)
    assert third != second
    header = json.loads(_jws.b64url_decode(third.split(".")[0]))
    assert header["kid"] == env.broker.keyring.active_kid
    assert len(env.audit("workload_identity_issued")) == 3

    # Still checked every time: a holder no longer in good standing is refused.
    _declare_done(env, b, "q" * 16)
    assert env.http.post("/v1/workload/identity", headers=b.auth()).status_code in (401, 403)
