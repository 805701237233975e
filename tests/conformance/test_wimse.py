"""WIMSE workload credentials and proofs (draft-ietf-wimse-workload-creds-02, -wpt-02).

Workload Identity Tokens (``creds``) and Workload Proof Tokens with their HTTP header
binding (``wpt``).

WITs come from the running broker (``POST /v1/workload/identity``); WPTs are made by the
agent's key, with ``tasklease.rules.wimse`` and with an independent library (joserfc), and
checked by ``rules.wimse`` and ``core.mutual.verify_peer`` as a receiving workload would.
"""

from __future__ import annotations

import time
from typing import Any

import jwt as pyjwt
import pytest
from conformance_support import ISSUER, Agent, Kit, b64url, parts, token_hash
from joserfc import jwt as joserfc_jwt
from joserfc.jwk import OKPKey

from tasklease.core.mutual import ProofRejected, verify_peer
from tasklease.rules.binding import MemoryProofLedger
from tasklease.rules.wimse import (
    WorkloadProofError,
    make_wpt,
    verify_wit,
    verify_wpt,
)

NOT_APPLICABLE = {
    "workload-creds s5 Workload Identity Certificate": "the broker issues no certificates",
    "wpt s2 tth (transaction tokens)": "the broker issues no transaction tokens; a WPT that "
    "hashes one the request does not carry is refused (tested as for oth)",
}

TARGET = "https://peer.example/work"


def _wit(kit: Kit, agent: Agent) -> str:
    answer = kit.post("/v1/workload/identity", headers=agent.bearer())
    assert answer.status_code == 200, answer.text
    return str(answer.json()["workload_identity_token"])


@pytest.fixture(scope="module")
def issued(kit: Kit) -> tuple[Agent, str]:
    agent = kit.register()
    return agent, _wit(kit, agent)


def test_wimse_creds_s4_1_wit_header_and_claims(kit: Kit, issued: tuple[Agent, str]) -> None:
    """creds §4.1: header `alg` (not none) and `typ: wit+jwt`; claims `iss`, `sub` (the
    workload identifier), `exp`, `jti`, and `cnf.jwk` with `alg`."""
    agent, wit = issued
    header, claims = parts(wit)
    assert header["typ"] == "wit+jwt" and header["alg"] == "EdDSA"
    assert claims["iss"] == ISSUER and claims["sub"] == agent.agent_id
    assert isinstance(claims["exp"], int) and claims["jti"]
    jwk = claims["cnf"]["jwk"]
    assert jwk == {
        "kty": "OKP",
        "crv": "Ed25519",
        "x": b64url(bytes(agent.signing_key.verify_key)),
        "alg": "EdDSA",
    }
    assert claims["exp"] <= parts(agent.token)[1]["exp"]


def test_wimse_creds_s4_1_wit_verifies_with_the_jwks(kit: Kit, issued: tuple[Agent, str]) -> None:
    """creds §3 and §4.1: the WIT is verified with the trust domain's keys (the JWKS), by
    an independent library and by `verify_wit`."""
    agent, wit = issued
    kid = parts(wit)[0]["kid"]
    jwk = next(k for k in kit.jwks()["keys"] if k["kid"] == kid)
    claims = pyjwt.decode(wit, pyjwt.PyJWK(jwk).key, algorithms=["EdDSA"])
    assert claims["sub"] == agent.agent_id
    identity = verify_wit(wit, resolve_key=kit.verify_keys(), issuer=ISSUER, now=time.time())
    assert identity.sub == agent.agent_id


def test_wimse_creds_s4_1_wit_is_not_a_bearer_token(kit: Kit, issued: tuple[Agent, str]) -> None:
    """creds §4.1: the WIT MUST NOT be used as a bearer token: the broker refuses it."""
    _, wit = issued
    answer = kit.post("/v1/token/renew", headers={"Authorization": f"Bearer {wit}"})
    assert answer.status_code == 401
    assert kit.validate(wit)["valid"] is False


def test_wimse_wpt_s2_wpt_header_and_claims(issued: tuple[Agent, str]) -> None:
    """wpt §2: header `alg` (the WIT's `cnf.jwk.alg`) and `typ: wpt+jwt`; claims `aud`
    (the target URI without query and fragment), `exp`, `jti`, `wth` and `ath`."""
    agent, wit = issued
    now = time.time()
    wpt = make_wpt(
        agent.signing_key, wit=wit, target_uri=TARGET + "?q=1#f", now=now, access_token=agent.token
    )
    header, claims = parts(wpt)
    assert header == {"alg": "EdDSA", "typ": "wpt+jwt"}
    assert claims["aud"] == TARGET and claims["exp"] == int(now) + 30
    assert claims["wth"] == token_hash(wit) and claims["ath"] == token_hash(agent.token)
    assert len(claims["jti"]) >= 22  # 128 bits, base64url


def _verify(kit: Kit, agent: Agent, wit: str, wpt: str, **changes: Any) -> dict[str, Any]:
    now = changes.pop("now", time.time())
    identity = verify_wit(wit, resolve_key=kit.verify_keys(), issuer=ISSUER, now=now)
    args: dict[str, Any] = {
        "identity": identity,
        "wit": wit,
        "target_uri": TARGET,
        "now": now,
        "replay": MemoryProofLedger(),
        "access_token": agent.token,
    }
    args.update(changes)
    return verify_wpt(wpt, **args)


def test_wimse_wpt_s2_recipient_checks(kit: Kit, issued: tuple[Agent, str]) -> None:
    """wpt §2: the recipient checks `alg`, the signature with the WIT's key, `typ`, `aud`,
    `exp` (and not unreasonably far), `wth`, `ath`, `oth`, and a `jti` used once."""
    agent, wit = issued
    key, now = agent.signing_key, time.time()

    def wpt(**changes: Any) -> str:
        args: dict[str, Any] = {
            "wit": wit,
            "target_uri": TARGET,
            "now": now,
            "access_token": agent.token,
        }
        args.update(changes)
        return make_wpt(changes.pop("key", key), **{k: v for k, v in args.items() if k != "key"})

    good = wpt()
    ledger = MemoryProofLedger()
    assert _verify(kit, agent, wit, good, replay=ledger)["aud"] == TARGET
    refusals = {
        "replayed": (good, {"replay": ledger}),
        "target URI": (wpt(target_uri="https://other.example/work"), {}),
        "expired": (wpt(ttl=5), {"now": now + 5}),
        "wth": (wpt(wit=wit[:-2] + "xx"), {}),
        "ath": (wpt(access_token="another token"), {}),
        "does not carry": (wpt(), {"access_token": None}),
        "oth": (wpt(other_tokens={"x-extra": "t"}), {}),
        "lacks oth": (wpt(), {"other_tokens": {"x-extra": "t"}}),
        "WIT's key": (make_wpt(_other_key(), wit=wit, target_uri=TARGET, now=now), {}),
    }
    for what, (token, changes) in refusals.items():
        with pytest.raises(WorkloadProofError, match=what.split()[-1]):
            _verify(kit, agent, wit, token, **changes)
    far = make_wpt(key, wit=wit, target_uri=TARGET, now=now + 600, access_token=agent.token)
    with pytest.raises(WorkloadProofError, match="far in the future"):
        _verify(kit, agent, wit, far)


def _other_key() -> Any:
    import nacl.signing

    return nacl.signing.SigningKey.generate()


@pytest.mark.filterwarnings("ignore::joserfc.errors.SecurityWarning")  # RFC 9864's name
def test_wimse_wpt_s2_interoperates_with_an_independent_library(
    kit: Kit, issued: tuple[Agent, str]
) -> None:
    """wpt §2: a WPT made by joserfc is accepted; ours verifies with joserfc and the WIT's
    `cnf.jwk`."""
    agent, wit = issued
    jwk = parts(wit)[1]["cnf"]["jwk"]
    private = OKPKey.import_key({**jwk, "d": b64url(bytes(agent.signing_key))})
    now = int(time.time())
    claims = {
        "aud": TARGET,
        "exp": now + 30,
        "jti": b64url(b"0123456789abcdef"),
        "wth": token_hash(wit),
        "ath": token_hash(agent.token),
    }
    theirs = joserfc_jwt.encode({"alg": "EdDSA", "typ": "wpt+jwt"}, claims, private, ["EdDSA"])
    assert _verify(kit, agent, wit, theirs)["jti"] == claims["jti"]
    ours = make_wpt(agent.signing_key, wit=wit, target_uri=TARGET, now=now)
    decoded = joserfc_jwt.decode(ours, OKPKey.import_key(jwk), algorithms=["EdDSA"])
    assert decoded.header["typ"] == "wpt+jwt" and decoded.claims["wth"] == token_hash(wit)


@pytest.mark.filterwarnings("ignore::joserfc.errors.SecurityWarning")  # RFC 9864's name
def test_wimse_wpt_s2_an_exp_no_float_holds_is_refused_as_too_far(
    kit: Kit, issued: tuple[Agent, str]
) -> None:
    """wpt §2: an `exp` unreasonably far in the future is refused, even one no float holds
    (it raised OverflowError, an error of the verifier rather than a refused proof)."""
    agent, wit = issued
    jwk = parts(wit)[1]["cnf"]["jwk"]
    private = OKPKey.import_key({**jwk, "d": b64url(bytes(agent.signing_key))})
    claims = {
        "aud": TARGET,
        "exp": 10**400,
        "jti": b64url(b"fedcba9876543210"),
        "wth": token_hash(wit),
        "ath": token_hash(agent.token),
    }
    theirs = joserfc_jwt.encode({"alg": "EdDSA", "typ": "wpt+jwt"}, claims, private, ["EdDSA"])
    with pytest.raises(WorkloadProofError, match="far in the future"):
        _verify(kit, agent, wit, theirs)


def test_wimse_wpt_s2_a_peer_checks_token_wit_and_proof_together(
    kit: Kit, issued: tuple[Agent, str]
) -> None:
    """wpt §2 with creds §4.1: a receiving agent accepts the request of the WIT's workload
    only, with the WIT of the access token's holder."""
    agent, wit = issued
    other = kit.register()
    now = time.time()
    wpt = make_wpt(agent.signing_key, wit=wit, target_uri=TARGET, now=now, access_token=agent.token)
    ledger = MemoryProofLedger()
    claims = verify_peer(
        agent.token, wit, wpt, resolve_key=kit.verify_keys(), issuer=ISSUER,
        target_uri=TARGET, now=now, replay=ledger,
    )  # fmt: skip
    assert claims["sub"] == agent.agent_id
    with pytest.raises(ProofRejected, match="another workload"):
        verify_peer(
            other.token, wit, wpt, resolve_key=kit.verify_keys(), issuer=ISSUER,
            target_uri=TARGET, now=now, replay=ledger,
        )  # fmt: skip
