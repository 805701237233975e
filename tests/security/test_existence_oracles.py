"""A caller without a credential learns nothing of what exists from how it is refused.

An anonymous caller, or one with a credential of narrow reach, must not tell an agent, an
operator or an app it may not see from one that does not exist: the status, the error
code, the detail and what the refusal spends are the same for both, and so is the work
the broker does for each (the same checks run, so the time taken says nothing either).
Against a real broker process on SQLite, over loopback HTTP, where the outward answers
are compared; at the core where the code path is.
"""

from __future__ import annotations

import secrets
from typing import Any

import httpx
import nacl.signing
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from e2e_support import RunningBroker, b64, dpop_proof
from security_support import CTX, admin, make_broker, register

import tasklease.rules.jws as jws_module
from tasklease.core.broker import Broker
from tasklease.core.errors import Unauthorized
from tasklease.rules.messages import operator_sign_in_input

pytestmark = pytest.mark.slow


def _outward(answer: httpx.Response) -> tuple[int, str, str, bool]:
    """What a caller sees of a refusal, but for its ids."""
    body = answer.json()
    return (
        answer.status_code,
        body.get("error_code", ""),
        body.get("detail", ""),
        ("denial_id" in body),
    )


def _audited(broker: RunningBroker, answer: httpx.Response) -> str:
    denial = answer.json()["denial_id"]
    found = broker.get(
        "/v1/audit/events?outcome=denied&limit=1000", headers=broker.admin_headers()
    ).json()["events"]
    hits = [e["detail"] for e in found if e["detail"].endswith(f"denial={denial}")]
    assert len(hits) == 1, answer.text
    return str(hits[0])


def _unknown_like(agent_id: str) -> str:
    """An agent id of the same shape (trust domain, orch, task), with an instance no
    agent has."""
    head, _, _ = agent_id.rpartition("/")
    return f"{head}/{secrets.token_hex(8)}"


def test_a_resumption_does_not_tell_a_bound_agent_from_an_unknown_one(
    broker: RunningBroker,
) -> None:
    """A DPoP-bound agent's id, asked to resume by someone without its key, is answered
    as an id no agent has: a body without a nonce is 400 for both, and a signature by
    another key is the same 401 for both, with the nonce spent. (The binding used to be
    checked first, before the body was read: a bound agent answered 401 where an unknown
    one answered 400, and its nonce stayed unspent.)"""
    bound = broker.register(["read:data:*"], dpop=True)
    unknown = _unknown_like(bound.agent_id)

    def probe(agent_id: str, **body: Any) -> httpx.Response:
        return broker.post("/v1/resume", json={"agent_id": agent_id, **body})

    # No nonce, no signature.
    assert _outward(probe(bound.agent_id)) == _outward(probe(unknown))
    assert probe(unknown).status_code == 400

    # A fresh nonce signed by a key that is not the agent's: the same 401 for both, and
    # the nonce is spent (the agent's own signature over it no longer resumes it).
    url = f"{broker.url}/v1/resume"
    stranger = Ed25519PrivateKey.generate()
    answers = {}
    for agent_id in (bound.agent_id, unknown):
        nonce = broker.nonce()
        first = probe(agent_id, nonce=nonce, signature=b64(stranger.sign(bytes.fromhex(nonce))))
        assert first.status_code == 401, first.text
        answers[agent_id] = _outward(first)
        if agent_id == bound.agent_id:
            late = broker.post(
                "/v1/resume",
                json={
                    "agent_id": agent_id,
                    "nonce": nonce,
                    "signature": b64(bound.key.sign(bytes.fromhex(nonce))),
                },
                headers={"DPoP": dpop_proof(bound.key, "POST", url)},
            )
            assert late.status_code == 401, late.text
    assert answers[bound.agent_id] == answers[unknown]

    # The agent itself still resumes, with its key and a proof of its DPoP key; and a
    # holder of its key without that proof is refused.
    nonce = broker.nonce()
    own = {"nonce": nonce, "signature": b64(bound.key.sign(bytes.fromhex(nonce)))}
    refused = probe(bound.agent_id, **own)
    assert refused.status_code == 401, refused.text
    assert "DPoP" in _audited(broker, refused)
    nonce = broker.nonce()
    own = {"nonce": nonce, "signature": b64(bound.key.sign(bytes.fromhex(nonce)))}
    resumed = broker.post(
        "/v1/resume",
        json={"agent_id": bound.agent_id, **own},
        headers={"DPoP": dpop_proof(bound.key, "POST", url)},
    )
    assert resumed.status_code == 200, resumed.text
    assert resumed.json()["token_type"] == "DPoP"


class _Verifications:
    """Counts the Ed25519 signature checks the broker makes (``rules.jws``)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.count = 0
        real = jws_module.verify_detached

        def counted(*args: Any, **kwargs: Any) -> bool:
            self.count += 1
            return real(*args, **kwargs)

        monkeypatch.setattr(jws_module, "verify_detached", counted)

    def during(self, call: Any) -> int:
        before = self.count
        with pytest.raises(Unauthorized):
            call()
        return self.count - before


def _key_sign_in(broker: Broker, name: str) -> Any:
    """A key sign-in as ``name`` with a fresh nonce, signed by a key no operator has."""
    stranger = nacl.signing.SigningKey.generate()

    def call() -> Any:
        nonce, _ = broker.challenge()
        signed = stranger.sign(operator_sign_in_input(name, nonce)).signature
        return broker.operator_auth(
            name=name, secret=None, nonce=nonce, signature=b64(signed), ctx=CTX
        )

    return call


def test_a_key_sign_in_checks_one_signature_whoever_is_named(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An operator name with a key, one without (a secret), a removed one and one that no
    operator has: each refused key sign-in checks one signature, so its time does not tell
    an operator who signs in with a key from a name no operator has (a secret sign-in
    runs one argon2 check for every name, decision 11). It used to check none for a name
    without a usable key: some 150 us less over loopback HTTP, measurable in a few
    hundred sign-ins."""
    broker = make_broker()
    claims = admin(broker).claims
    key = nacl.signing.SigningKey.generate()
    broker.add_operator(
        claims, name="keyed", role="auditor", public_key=b64(bytes(key.verify_key)), ctx=CTX
    )
    broker.add_operator(claims, name="secreted", role="auditor", public_key=None, ctx=CTX)
    broker.add_operator(
        claims, name="removed", role="auditor", public_key=b64(bytes(key.verify_key)), ctx=CTX
    )
    broker.remove_operator(claims, "removed", CTX)
    checks = _Verifications(monkeypatch)
    counted = {
        name: checks.during(_key_sign_in(broker, name))
        for name in ("keyed", "secreted", "removed", "nobody")
    }
    assert counted == {"keyed": 1, "secreted": 1, "removed": 1, "nobody": 1}


def test_a_resumption_checks_one_signature_whether_the_agent_exists(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A resumption of an agent id no agent has checks a signature as one of a
    registered agent signed by another key does: its time does not say the agent exists."""
    broker = make_broker()
    agent = register(broker)
    stranger = nacl.signing.SigningKey.generate()
    checks = _Verifications(monkeypatch)

    def resume(agent_id: str) -> Any:
        def call() -> Any:
            nonce, _ = broker.challenge()
            signed = stranger.sign(bytes.fromhex(nonce)).signature
            return broker.resume(agent_id=agent_id, nonce=nonce, signature=b64(signed), ctx=CTX)

        return call

    known = checks.during(resume(agent.claims.sub))
    unknown = checks.during(resume(_unknown_like(agent.claims.sub)))
    assert (known, unknown) == (1, 1)


def _assertion(signer: nacl.signing.SigningKey, client_id: str, audience: str, now: int) -> str:
    """A well-formed client assertion (RFC 7523) for ``client_id``, signed by ``signer``."""
    header = jws_module.b64url_encode(b'{"alg":"EdDSA","typ":"JWT"}')
    body = (
        f'{{"iss":"{client_id}","sub":"{client_id}","aud":"{audience}",'
        f'"exp":{now + 60},"iat":{now},"jti":"{secrets.token_hex(8)}"}}'
    )
    signing_input = f"{header}.{jws_module.b64url_encode(body.encode())}"
    signature = signer.sign(signing_input.encode()).signature
    return f"{signing_input}.{jws_module.b64url_encode(signature)}"


def test_a_client_assertion_checks_one_signature_whatever_client_it_names(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An app's sign-in with a signed client assertion (``private_key_jwt``) checks one
    signature for an app with a key, one without (a secret only), a removed one and a
    client id no app has: its time does not tell a client id that exists from one that
    does not (decision 334's rule for key sign-ins and resumption). It used to check none
    for an unknown client id or an app without a key."""
    broker = make_broker()
    claims = admin(broker).claims
    key = nacl.signing.SigningKey.generate()
    public = b64(bytes(key.verify_key))
    keyed, _ = broker.register_app(
        claims, name="keyed", scopes=["read:data:*"], token_ttl=None, ctx=CTX, public_key=public
    )
    secreted, _ = broker.register_app(
        claims, name="secreted", scopes=["read:data:*"], token_ttl=None, ctx=CTX
    )
    removed, _ = broker.register_app(
        claims, name="removed", scopes=["read:data:*"], token_ttl=None, ctx=CTX, public_key=public
    )
    broker.deregister_app(claims, removed.app_id, CTX)
    audience = broker.config.issuer
    stranger = nacl.signing.SigningKey.generate()
    now = int(broker.clock.now())
    checks = _Verifications(monkeypatch)

    def sign_in(client_id: str) -> Any:
        def call() -> Any:
            assertion = _assertion(stranger, client_id, audience, now)
            return broker.app_auth_assertion(assertion, CTX, client_id=None, audiences=(audience,))

        return call

    nobody = keyed.client_id[:-4] + ("0000" if not keyed.client_id.endswith("0000") else "1111")
    counted = {
        name: checks.during(sign_in(client_id))
        for name, client_id in (
            ("keyed", keyed.client_id),
            ("secreted", secreted.client_id),
            ("removed", removed.client_id),
            ("nobody", nobody),
        )
    }
    assert counted == {"keyed": 1, "secreted": 1, "removed": 1, "nobody": 1}
