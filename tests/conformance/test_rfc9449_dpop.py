"""RFC 9449: OAuth 2.0 Demonstrating Proof of Possession (DPoP).

Agents register with a DPoP proof and present their token with ``Authorization: DPoP`` and
a fresh proof on every request; resource servers forward what they received to
``/v1/token/validate``. Proofs are also made with an independent library (joserfc).
"""

from __future__ import annotations

import base64
import secrets
import socket
import time
from typing import Any

import nacl.signing
import pytest
from conformance_support import (
    Kit,
    b64url,
    deviation,
    dpop_proof,
    parts,
    token_hash,
    www_authenticate,
)
from joserfc import jwt as joserfc_jwt
from joserfc.jwk import OKPKey
from worker_procs import ESTABLISHED, socket_inodes, tcp_inodes, wait_workers_listening

NOT_APPLICABLE = {
    "s5 token request to a token endpoint (grant_type)": "registration is the token request; "
    "the OAuth token endpoint of the token-exchange work answers the same way",
    "s10 authorization code binding (dpop_jkt)": "no authorization code flow",
}

RS = "https://resource.example/orders"


def _renew(kit: Kit, key: nacl.signing.SigningKey, token: str, **proof: Any) -> Any:
    htu = proof.pop("htu", f"{kit.url}/v1/token/renew")
    headers = {
        "Authorization": f"DPoP {token}",
        "DPoP": dpop_proof(key, htm="POST", htu=htu, token=token, **proof),
    }
    return kit.post("/v1/token/renew", headers=headers)


def test_rfc9449_s4_2_s6_1_registration_binds_the_token_to_the_proof_key(kit: Kit) -> None:
    """§4.2, §5 and §6.1: a registration with a proof answers `token_type: DPoP` and a token
    with `cnf.jkt`, the thumbprint of the proof's key."""
    agent = kit.register(dpop=True)
    assert agent.token_type == "DPoP" and agent.dpop is not None
    jwk = {"kty": "OKP", "crv": "Ed25519", "x": b64url(bytes(agent.dpop.verify_key))}
    assert parts(agent.token)[1]["cnf"]["jkt"] == OKPKey.import_key(jwk).thumbprint()


def test_rfc9449_s5_token_type_is_dpop_wherever_a_bound_token_is_issued(kit: Kit) -> None:
    """§5: every answer that issues a DPoP-bound token says `token_type: DPoP` (renew,
    delegate; resume in tests/agents)."""
    agent = kit.register(dpop=True)
    assert agent.dpop is not None
    renewed = _renew(kit, agent.dpop, agent.token)
    assert renewed.status_code == 200, renewed.text
    assert renewed.json()["token_type"] == "DPoP"
    token = renewed.json()["access_token"]
    other = kit.register(dpop=True)
    delegated = kit.post(
        "/v1/delegate",
        json={"delegate_to": other.agent_id, "scope": ["read:data:42"]},
        headers={
            "Authorization": f"DPoP {token}",
            "DPoP": dpop_proof(agent.dpop, htm="POST", htu=f"{kit.url}/v1/delegate", token=token),
        },
    )
    assert delegated.status_code == 200, delegated.text
    assert delegated.json()["token_type"] == "DPoP"  # bound to the delegate's own key


def test_rfc9449_s5_an_invalid_proof_at_registration_is_invalid_dpop_proof(kit: Kit) -> None:
    """§5: a token request with an invalid proof is 400 `invalid_dpop_proof` (RFC 6749
    §5.2 shape)."""
    key = nacl.signing.SigningKey.generate()
    body, _ = kit.broker.register_body(kit.launch(), ["read:data:42"])
    wrong = dpop_proof(key, htm="GET", htu=f"{kit.url}/v1/register")
    answer = kit.post("/v1/register", json=body, headers={"DPoP": wrong})
    assert answer.status_code == 400
    assert answer.json()["error"] == "invalid_dpop_proof"


def test_rfc9449_s4_3_proofs_that_fail_a_check_are_refused(kit: Kit) -> None:
    """§4.3: one JWT; `typ: dpop+jwt`; an asymmetric `alg` and a public `jwk`; a valid
    signature; `htm` and `htu` of this request; `iat` within the window; `ath` of the
    presented token."""
    agent = kit.register(dpop=True)
    key = agent.dpop
    assert key is not None
    other = nacl.signing.SigningKey.generate()
    refusals: dict[str, Any] = {
        "htm": dict(htu=f"{kit.url}/v1/token/release"),
        "htu": dict(htu="https://elsewhere.example/v1/token/renew"),
        "iat": dict(iat=time.time() - 600),
        "future iat": dict(iat=time.time() + 600),
        "typ": dict(typ="jwt"),
        "ath": dict(extra={"ath": token_hash("another token")}),
    }
    for what, proof in refusals.items():
        answer = _renew(kit, key, agent.token, **proof)
        assert answer.status_code == 401, what
        assert www_authenticate(answer)["DPoP"]["error"] == "invalid_dpop_proof", what
    # Another key than the token's cnf.jkt.
    assert _renew(kit, other, agent.token).status_code == 401
    # The same proof sent twice: single use.
    headers = {
        "Authorization": f"DPoP {agent.token}",
        "DPoP": dpop_proof(key, htm="GET", htu=RS, token=agent.token),
    }
    forwarded = {"dpop": headers["DPoP"], "htm": "GET", "htu": RS}
    assert kit.validate(agent.token, **forwarded)["valid"] is True
    assert kit.validate(agent.token, **forwarded)["valid"] is False


def test_rfc9449_s4_3_typ_compares_as_a_media_type(kit: Kit) -> None:
    """§4.3 (RFC 7515 §4.1.9): `typ` `application/dpop+jwt` is `dpop+jwt`."""
    agent = kit.register(dpop=True)
    assert agent.dpop is not None
    answer = _renew(kit, agent.dpop, agent.token, typ="application/dpop+jwt")
    assert answer.status_code == 200, answer.text


@pytest.mark.filterwarnings("ignore::joserfc.errors.SecurityWarning")  # RFC 9864's name
def test_rfc9449_s4_2_a_proof_made_by_an_independent_library_is_accepted(kit: Kit) -> None:
    """§4.2: a proof built by joserfc (its own header and JSON encoding) is accepted."""
    agent = kit.register(dpop=True)
    assert agent.dpop is not None
    jwk = OKPKey.import_key(
        {
            "kty": "OKP",
            "crv": "Ed25519",
            "x": b64url(bytes(agent.dpop.verify_key)),
            "d": b64url(bytes(agent.dpop)),
        }
    )
    header = {"typ": "dpop+jwt", "alg": "EdDSA", "jwk": jwk.as_dict(private=False)}
    claims = {
        "jti": secrets.token_urlsafe(16),
        "htm": "GET",
        "htu": RS,
        "iat": int(time.time()),
        "ath": token_hash(agent.token),
    }
    proof = joserfc_jwt.encode(header, claims, jwk, algorithms=["EdDSA"])
    assert kit.validate(agent.token, dpop=proof, htm="GET", htu=RS)["valid"] is True


def test_rfc9449_s7_1_a_bound_token_needs_the_dpop_scheme(kit: Kit) -> None:
    """§7.1: a DPoP-bound token presented as `Bearer` (even with a proof) is refused with a
    401 `invalid_token`; `WWW-Authenticate` offers `DPoP` with the `algs` accepted."""
    agent = kit.register(dpop=True)
    assert agent.dpop is not None
    answer = kit.post(
        "/v1/token/renew",
        headers={
            "Authorization": f"Bearer {agent.token}",
            "DPoP": dpop_proof(
                agent.dpop, htm="POST", htu=f"{kit.url}/v1/token/renew", token=agent.token
            ),
        },
    )
    assert answer.status_code == 401
    challenges = www_authenticate(answer)
    assert challenges["Bearer"]["error"] == "invalid_token"
    assert challenges["DPoP"]["algs"] == "EdDSA"


def test_rfc9449_s7_1_an_unbound_token_is_not_dpop(kit: Kit) -> None:
    """§7.1: the DPoP scheme with a token that is not DPoP-bound is refused."""
    agent = kit.register()
    key = nacl.signing.SigningKey.generate()
    assert _renew(kit, key, agent.token).status_code == 401


def test_rfc9449_s8_registration_asks_for_the_servers_nonce(start_broker: Any) -> None:
    """§8: with nonces required, a token request whose proof lacks a current nonce is 400
    `use_dpop_nonce` with a fresh `DPoP-Nonce`; the proof made with it is accepted."""
    kit = Kit(start_broker({"TASKLEASE_DPOP_NONCE": "required"}))
    key = nacl.signing.SigningKey.generate()
    body, _ = kit.broker.register_body(kit.launch(), ["read:data:42"])
    htu = f"{kit.url}/v1/register"
    first = kit.post(
        "/v1/register", json=body, headers={"DPoP": dpop_proof(key, htm="POST", htu=htu)}
    )
    assert first.status_code == 400 and first.json()["error"] == "use_dpop_nonce"
    nonce = first.headers["DPoP-Nonce"]
    forged = nonce[:-4] + ("AAAA" if not nonce.endswith("AAAA") else "BBBB")
    stale = dpop_proof(key, htm="POST", htu=htu, extra={"nonce": forged})
    assert kit.post("/v1/register", json=body, headers={"DPoP": stale}).status_code == 400
    proof = dpop_proof(key, htm="POST", htu=htu, extra={"nonce": nonce})
    answer = kit.post("/v1/register", json=body, headers={"DPoP": proof})
    assert answer.status_code == 200, answer.text
    assert answer.json()["token_type"] == "DPoP"


def test_rfc9449_s9_the_broker_as_resource_asks_for_its_nonce(start_broker: Any) -> None:
    """§9: at a protected route, a proof without a current nonce is 401 with
    `WWW-Authenticate: DPoP error="use_dpop_nonce"` and a `DPoP-Nonce`; the SDK retries by
    itself, and proofs a resource server forwards to validation need none."""
    from tasklease.client import Agent as SdkAgent

    broker = start_broker({"TASKLEASE_DPOP_NONCE": "required"})
    kit = Kit(broker)
    launch = kit.launch(["read:data:42"])
    with SdkAgent.register(
        broker.url, launch, "orch", "task", ["read:data:42"], dpop=True
    ) as agent:
        key = agent.dpop_key
        assert key is not None
        token = agent.token
        bare = kit.post(
            "/v1/token/renew",
            headers={
                "Authorization": f"DPoP {token}",
                "DPoP": dpop_proof(key, htm="POST", htu=f"{kit.url}/v1/token/renew", token=token),
            },
        )
        assert bare.status_code == 401 and bare.headers["DPoP-Nonce"], bare.headers
        assert www_authenticate(bare)["DPoP"]["error"] == "use_dpop_nonce", bare.headers
        agent.renew()  # the SDK sends the nonce it was given, retrying once if asked
        assert agent.token != token
        forwarded = dpop_proof(key, htm="GET", htu=RS, token=agent.token)
        assert kit.validate(agent.token, dpop=forwarded, htm="GET", htu=RS)["valid"] is True


@deviation(
    "a resumption answers every failure, a bad DPoP proof included, with one 401 (no oracle "
    "of which agents exist and how they are bound)"
)
def test_rfc9449_s5_resume_refuses_a_bad_proof_like_any_failure(kit: Kit) -> None:
    """§5: a token request with an invalid proof is `invalid_dpop_proof`; `/v1/resume` (a
    token request of a registered agent) answers it as any failure: 401 `unauthorized`."""
    agent = kit.register(dpop=True)
    nonce = kit.broker.nonce()
    body = {
        "agent_id": agent.agent_id,
        "nonce": nonce,
        "signature": base64.b64encode(agent.key.sign(bytes.fromhex(nonce))).decode(),
    }
    wrong = dpop_proof(nacl.signing.SigningKey.generate(), htm="POST", htu=f"{kit.url}/v1/resume")
    answer = kit.post("/v1/resume", json=body, headers={"DPoP": wrong})
    assert answer.status_code == 401 and answer.json()["error_code"] == "unauthorized"
    good = dpop_proof(agent.dpop, htm="POST", htu=f"{kit.url}/v1/resume")  # type: ignore[arg-type]
    body["nonce"] = nonce = kit.broker.nonce()
    body["signature"] = base64.b64encode(agent.key.sign(bytes.fromhex(nonce))).decode()
    resumed = kit.post("/v1/resume", json=body, headers={"DPoP": good})
    assert resumed.status_code == 200, resumed.text
    assert resumed.json()["token_type"] == "DPoP"  # §5, at resumption too


# --- section 11.1: a proof is single use across the broker's workers -----------------


def test_rfc9449_s11_1_a_proof_is_single_use_across_workers(start_broker: Any) -> None:
    """§11.1: a proof is accepted once: the same proof sent at once on 24 connections
    spread over two worker processes is valid exactly once."""
    broker = start_broker(args=("--workers", "2"))
    kit = Kit(broker)
    port = int(broker.url.rsplit(":", 1)[1])
    # Health answered from one worker: wait until the other listens too.
    workers = wait_workers_listening(broker.proc.pid, port, 2, database="tasklease.db")
    agent = kit.register(dpop=True)
    assert agent.dpop is not None
    served: dict[int, int] = {}
    # Which worker accepts a connection is the kernel's choice, and a loaded host may hand
    # all 24 to one: each attempt a fresh proof, until one reached both workers.
    for _ in range(5):
        proof = dpop_proof(agent.dpop, htm="GET", htu=RS, token=agent.token)
        body = (f'{{"token":"{agent.token}","dpop":"{proof}","htm":"GET","htu":"{RS}"}}').encode()
        request = (
            f"POST /v1/token/validate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        ).encode() + body
        sockets = [socket.create_connection(("127.0.0.1", port)) for _ in range(24)]
        try:
            for sock in sockets:
                sock.sendall(request)
            answers = [_read_answer(sock) for sock in sockets]
            established = tcp_inodes(port, ESTABLISHED)
            served = {pid: len(socket_inodes(pid) & established) for pid in workers}
        finally:
            for sock in sockets:
                sock.close()
        assert sum('"valid":true' in answer for answer in answers) == 1, answers
        if len(served) == 2 and min(served.values()) >= 1:
            break
    assert len(served) == 2 and min(served.values()) >= 1, served  # both workers answered


def _read_answer(sock: socket.socket) -> str:
    sock.settimeout(15)
    data = b""
    while b"\r\n\r\n" not in data:
        data += sock.recv(65536)
    head, _, rest = data.partition(b"\r\n\r\n")
    length = next(
        int(line.split(b":")[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length")
    )
    while len(rest) < length:
        rest += sock.recv(65536)
    return rest.decode()


def test_rfc9449_s11_1_replay_cache_rows_expire_with_the_window(kit: Kit) -> None:
    """§11.1: proofs are remembered only while they could be accepted (the window): a
    proof's `jti` may be reused by another key, and a stale proof is refused by `iat`."""
    a, b = kit.register(dpop=True), kit.register(dpop=True)
    assert a.dpop is not None and b.dpop is not None
    jti = secrets.token_urlsafe(16)
    for agent in (a, b):
        proof = dpop_proof(agent.dpop, htm="GET", htu=RS, token=agent.token, jti=jti)  # type: ignore[arg-type]
        assert kit.validate(agent.token, dpop=proof, htm="GET", htu=RS)["valid"] is True
    stale = dpop_proof(a.dpop, htm="GET", htu=RS, token=a.token, iat=time.time() - 61)
    assert kit.validate(a.token, dpop=stale, htm="GET", htu=RS)["valid"] is False


def test_rfc9449_s4_1_more_than_one_dpop_header_is_refused(kit: Kit) -> None:
    """§4.3 point 1: exactly one `DPoP` header; two are refused."""
    agent = kit.register(dpop=True)
    assert agent.dpop is not None
    proof = dpop_proof(agent.dpop, htm="POST", htu=f"{kit.url}/v1/token/renew", token=agent.token)
    answer = kit.broker.client.post(
        "/v1/token/renew",
        headers=[("Authorization", f"DPoP {agent.token}"), ("DPoP", proof), ("DPoP", proof)],
    )
    assert answer.status_code == 401
