"""tasklease.verify without the server's dependencies, and the broker's rules applied."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import textwrap
from typing import Any

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tasklease.core.clock import ManualClock
from tasklease.core.keys import KeyRing
from tasklease.core.revocation import RevocationIndex as CoreIndex
from tasklease.core.tokens import KIND_AGENT, DelegationRecord, mint
from tasklease.verify import InvalidToken, VerifiedToken, Verifier
from tasklease.verify._claims import parse_claims
from tasklease.verify._revocations import parse_entry

_ABSENT = object()  # a claim left out
SERVER_ONLY = ("msgspec", "starlette", "uvicorn", "argon2", "prometheus_client", "cryptography")

_OFFLINE = textwrap.dedent(
    """
    import sys, json, time

    class Block:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in BLOCKED:
                raise ImportError(f"blocked: {name}")
            return None

    BLOCKED = set(json.loads(sys.argv[1]))
    sys.meta_path.insert(0, Block())

    import httpx, nacl.signing
    from tasklease.rules import jws as _jws
    from tasklease.rules import _codec
    from tasklease.rules.jws import jwk_thumbprint as thumbprint
    from tasklease.verify import Verifier, InvalidToken

    key = nacl.signing.SigningKey(b"k" * 32)
    kid = thumbprint(bytes(key.verify_key))
    jwks = {"keys": [{"kty": "OKP", "crv": "Ed25519", "kid": kid,
                      "x": _jws.b64url_encode(bytes(key.verify_key))}]}
    transport = httpx.MockTransport(lambda request: httpx.Response(200, json=jwks))
    verifier = Verifier("https://broker", audience="svc-a", feed=False, transport=transport)
    now = int(time.time())
    claims = {"iss": "tasklease", "sub": "spiffe://t/agent/o/t/i", "aud": ["svc-a"],
              "exp": now + 60, "nbf": now, "iat": now, "jti": "j" * 32,
              "scope": ["read:data:42"], "client_id": "c"}
    # Spacing msgspec would not write: the strict stdlib path decides either way.
    token = _jws.encode(json.dumps(claims).encode(), typ="at+jwt", kid=kid, key=key)
    verified = verifier.verify(token)
    assert verified.has_scope("read:data:42") and not verified.has_scope("read:data:43")
    try:
        verifier.verify(token[:-4] + "AAAA")
    except InvalidToken:
        pass
    else:
        raise SystemExit("forged token accepted")
    # A DPoP-bound token and its proof, checked with PyNaCl alone.
    import hashlib
    holder = nacl.signing.SigningKey(b"h" * 32)
    x = _jws.b64url_encode(bytes(holder.verify_key))
    bound = _jws.encode(json.dumps({**claims, "jti": "d" * 32, "cnf": {"jkt": thumbprint(
        bytes(holder.verify_key))}}).encode(), typ="at+jwt", kid=kid, key=key)
    proof_claims = {"jti": "p1", "htm": "GET", "htu": "http://rs/x", "iat": now,
                    "ath": _jws.b64url_encode(hashlib.sha256(bound.encode()).digest())}
    head = {"typ": "dpop+jwt", "alg": "EdDSA", "jwk": {"kty": "OKP", "crv": "Ed25519", "x": x}}
    signing_input = (_jws.b64url_encode(json.dumps(head).encode()) + "."
                     + _jws.b64url_encode(json.dumps(proof_claims).encode()))
    proof = signing_input + "." + _jws.b64url_encode(
        holder.sign(signing_input.encode()).signature)
    assert verifier.verify(bound, scheme="DPoP", dpop_proof=proof, htm="GET",
                           htu="http://rs/x").cnf
    try:
        verifier.verify(bound)
    except InvalidToken as exc:
        assert exc.reason == "DPoP-bound token presented as a bearer token"
    else:
        raise SystemExit("bound token accepted as bearer")
    assert not any(m.split(".")[0] in BLOCKED for m in sys.modules)
    print("ok", _codec.msgspec)
    """
)


def test_verify_imports_and_verifies_without_server_dependencies() -> None:
    result = subprocess.run(
        [sys.executable, "-c", _OFFLINE, json.dumps(SERVER_ONLY)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok None"  # the stdlib JSON path was the one used


@pytest.mark.parametrize(
    ("level", "target", "revoked_at"),
    [
        ("token", "jti-1", 100),
        ("agent", "sub-1", 100),
        ("agent", "sub-1", 99),
        ("agent", "root", 100),
        ("task", "task-1", 100),
        ("task", "task-1", 50),
        ("chain", "root", 100),
        ("chain", "sub-1", 100),
        ("token", "other", 100),
        # Lineage ancestors: matched at chain level whenever the token was issued.
        ("chain", "parent-jti", 50),
        ("chain", "app:app-1", 50),
        ("chain", "grant-1", 50),
        ("chain", "unrelated-jti", 50),
    ],
)
def test_revocation_matching_mirrors_the_core(level: str, target: str, revoked_at: int) -> None:
    ring = KeyRing.generate()
    delegated = (DelegationRecord("root", ("read:data:*",), "2026-01-01T00:00:00Z", "ab"),)
    _, core_claims = mint(
        ring,
        kind=KIND_AGENT,
        iss="tasklease",
        sub="sub-1",
        aud=("svc-a",),
        iat=100,
        ttl=60,
        scope=("read:data:1",),
        client_id="c",
        task_id="task-1",
        delegation_chain=delegated,
        jti="jti-1",
        lineage=("app:app-1", "grant-1", "parent-jti"),
    )
    ours = parse_claims(dict(core_claims.raw))
    assert ours.lineage == core_claims.lineage == ("app:app-1", "grant-1", "parent-jti")
    index = CoreIndex()
    entry = {"level": level, "target": target, "revoked_at": revoked_at, "expires_at": 1e12}
    index.apply([parse_entry({**entry, "seq": 1})])
    # The verifier's parsed token and the broker's claims match alike in the one index.
    assert index.match(ours) == index.match(core_claims)


def _verifier_for(ring: KeyRing, **kwargs: Any) -> Verifier:
    jwks = ring.jwks()
    transport = httpx.MockTransport(lambda request: httpx.Response(200, json=jwks))
    return Verifier("https://broker", audience="svc-a", feed=False, transport=transport, **kwargs)


def test_claim_checks_refuse_what_the_broker_refuses() -> None:
    ring = KeyRing.generate()
    import time

    now = int(time.time())
    # A clock that stands still: a loaded host's second passing between signing and
    # verifying would move the one-second-past-the-skew cases inside it.
    verifier = _verifier_for(ring, clock_skew=30, clock=ManualClock(float(now)))

    def token(**overrides: Any) -> str:
        claims = {
            "iss": "tasklease",
            "sub": "s",
            "aud": ["svc-a"],
            "exp": now + 60,
            "nbf": now,
            "iat": now,
            "jti": "j",
            "scope": ["read:data:1"],
            "client_id": "c",
            **overrides,
        }
        claims = {k: v for k, v in claims.items() if v is not None}
        return ring.sign(json.dumps(claims).encode(), KIND_AGENT)

    assert isinstance(verifier.verify(token()), VerifiedToken)
    assert verifier.verify(token(jti="j2", iat=now + 20, nbf=now + 20)).iat == now + 20  # skew
    assert verifier.verify(token(jti="j3", lineage=["app:a", "g"], max_exp=now + 60)).lineage == (
        "app:a",
        "g",
    )
    cases = {
        "issuer mismatch": token(iss="evil"),
        "audience mismatch": token(aud=["svc-b"]),
        # Dead at its exp: no clock skew on exp (RFC 7519 section 4.1.4).
        "token expired": token(exp=now, iat=now - 90, nbf=now - 90),
        "token not yet valid": token(nbf=now + 31),
        "token issued in the future": token(iat=now + 31),
        "token outlives its lineage (exp after max_exp)": token(max_exp=now + 59),
        "claim lineage malformed or longer than the limit": token(lineage=["app:a", ""]),
        "token lifetime outside the allowed range": token(exp=now + 7200),
        "claim sub missing or not a string": token(sub=None),
        "chain_hash without a delegation chain": token(chain_hash="00"),
        "DPoP-bound token presented as a bearer token": token(cnf={"jkt": "x"}),
        "certificate-bound token presented without a client certificate": token(
            cnf={"x5t#S256": "x"}
        ),
        "cnf claim malformed": token(cnf={"x5t": "x"}),
        "act claim on a token that is not delegated": token(principal="user:a", act={"sub": "s"}),
    }
    for reason, bad in cases.items():
        with pytest.raises(InvalidToken) as caught:
            verifier.verify(bad)
        assert caught.value.reason == reason
    admin = ring.sign(json.dumps({"sub": "admin"}).encode(), "tasklease-admin+jwt")
    with pytest.raises(InvalidToken, match="token verification failed"):
        verifier.verify(admin)  # only at+jwt is an access token here (RFC 9068)


def test_cached_tokens_still_expire() -> None:
    class Clock:
        t = 1_000_000.0

        def now(self) -> float:
            return self.t

    clock = Clock()
    ring = KeyRing.generate()
    verifier = _verifier_for(ring, clock=clock, clock_skew=0)
    claims = {
        "iss": "tasklease",
        "sub": "s",
        "aud": ["svc-a"],
        "exp": 1_000_060,
        "nbf": 1_000_000,
        "iat": 1_000_000,
        "jti": "j",
        "scope": [],
        "client_id": "c",
    }
    tok = ring.sign(json.dumps(claims).encode(), KIND_AGENT)
    verifier.verify(tok)
    clock.t = 1_000_059.5
    verifier.verify(tok)  # cached
    clock.t = 1_000_060.0  # exp: dead, cached or not
    with pytest.raises(InvalidToken) as caught:
        verifier.verify(tok)
    assert caught.value.reason == "token expired"


def test_public_surface() -> None:
    import tasklease.verify as verify

    assert set(verify.__all__) == {
        "AppCredentials",
        "AuditProofError",
        "Checkpoint",
        "BrokerIntrospector",
        "CallCount",
        "DelegationHop",
        "FederatedDomain",
        "InsufficientScope",
        "InvalidToken",
        "KeySetStale",
        "RevocationStateStale",
        "TokenIntrospector",
        "VerificationError",
        "VerifiedToken",
        "Verifier",
        "VerifierUnavailable",
        "has_max_calls",
        "parse_jwks",
        "require_attested",
        "require_grant",
        "verify_checkpoint",
        "verify_event_inclusion",
        "verify_log_consistency",
        "verify_proof_bundle",
    }
    assert all(hasattr(verify, name) for name in verify.__all__)


def test_the_fast_claim_parse_builds_what_the_dataclass_would() -> None:
    payload = {
        "iss": "tasklease",
        "sub": "spiffe://tasklease.local/agent/o/t/1",
        "aud": ["svc-a", "svc-b"],
        "exp": 3_000_000_000,
        "nbf": 1_000,
        "iat": 1_000,
        "jti": "jti-1",
        "scope": "read:data:*",
        "task_id": "t",
        "orch_id": "o",
        "client_id": "admin",
        "principal": "user:ada",
        "chain_hash": "",
        "lineage": ["app:app-1", "grant-1"],
    }
    fast = parse_claims(payload)
    assert type(fast) is VerifiedToken
    assert fast == VerifiedToken(
        sub=payload["sub"],
        client_id="admin",
        scope=("read:data:*",),
        aud=("svc-a", "svc-b"),
        iss="tasklease",
        exp=3_000_000_000,
        nbf=1_000,
        iat=1_000,
        jti="jti-1",
        task_id="t",
        orch_id="o",
        delegation_chain=(),
        chain_hash="",
        claims=payload,
        principal="user:ada",
        lineage=("app:app-1", "grant-1"),
    )
    assert parse_claims(payload, by_reference=True).by_reference is True
    # Tokens minted before RFC 9068's string form list their scopes: read the same.
    assert parse_claims({**payload, "scope": ["read:data:*"]}).scope == fast.scope
    with pytest.raises(dataclasses.FrozenInstanceError):
        fast.sub = "someone else"  # type: ignore[misc]


@pytest.mark.parametrize(
    "missing", ["sub", "client_id", "jti", "exp", "nbf", "iat", "scope", "aud"]
)
def test_the_fast_claim_parse_names_a_missing_claim(missing: str) -> None:
    payload: dict[str, Any] = {
        "iss": "tasklease",
        "sub": "s",
        "aud": ["svc-a"],
        "exp": 3_000_000_000,
        "nbf": 1_000,
        "iat": 1_000,
        "jti": "j",
        "scope": "read:data:1",
        "client_id": "c",
    }
    assert parse_claims(dict(payload)) == parse_claims(dict(payload))
    del payload[missing]
    kind = "a list of strings" if missing == "aud" else "a string"
    kind = "an integer" if missing in ("exp", "nbf", "iat") else kind
    with pytest.raises(InvalidToken) as caught:
        parse_claims(payload)
    assert caught.value.reason == f"claim {missing} missing or not {kind}"


def test_the_key_set_refreshes_a_stale_set_and_keeps_keys_when_that_fails() -> None:
    from tasklease.verify._jwks import KeySet

    ring = KeyRing.generate()
    jwks = ring.jwks()
    up = [True]

    def answer(_request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json=jwks) if up[0] else httpx.Response(503)

    clock = [0.0]
    client = httpx.Client(base_url="http://broker", transport=httpx.MockTransport(answer))
    keys = KeySet(client, ttl=300, min_interval=30, monotonic=lambda: clock[0])
    assert keys.refresh()
    kid = ring.active_kid
    key = keys.resolve(kid)
    assert key is not None and keys.fetches == 1
    clock[0] = 299.0
    assert keys.resolve(kid) is key and keys.fetches == 1  # fresh: no fetch
    clock[0] = 300.0
    assert keys.resolve(kid) is not None and keys.fetches == 2  # stale: fetched again
    up[0] = False
    clock[0] = 700.0
    assert keys.resolve(kid) is not None and keys.fetches == 3  # failed: old key kept
    clock[0] = 710.0
    assert keys.resolve(kid) is not None and keys.fetches == 3  # retried after min_interval
    clock[0] = 731.0
    assert keys.resolve(kid) is not None and keys.fetches == 4
    client.close()


def test_a_key_is_usable_only_while_the_last_good_set_holds_it() -> None:
    """Decision 143: a successful fetch replaces the whole set (a key it does not list is
    gone, for the lookup that fetched it too); a failed one keeps the last good set; the
    async path learns from ``refresh_due`` that a fetch by age is due."""
    import nacl.signing

    from tasklease.rules.jws import jwk_thumbprint
    from tasklease.verify._jwks import KeySet

    old, new = nacl.signing.SigningKey.generate(), nacl.signing.SigningKey.generate()
    both = KeyRing(new, [old.verify_key])
    served: list[Any] = [both.jwks()]

    def answer(_request: httpx.Request) -> httpx.Response:
        body = served[0]
        return httpx.Response(503) if body is None else httpx.Response(200, json=body)

    clock = [0.0]
    client = httpx.Client(base_url="http://broker", transport=httpx.MockTransport(answer))
    keys = KeySet(client, ttl=300, min_interval=30, monotonic=lambda: clock[0])
    assert keys.refresh()
    old_kid = jwk_thumbprint(bytes(old.verify_key))
    assert keys.resolve(old_kid) is not None and not keys.refresh_due()
    served[0] = None  # the broker is away
    clock[0] = 300.0
    assert keys.refresh_due()
    assert keys.resolve(old_kid) is not None and keys.fetches == 2  # failed: last good set
    assert not keys.refresh_due()  # retried only after min_interval
    served[0] = KeyRing(new).jwks()  # back, without the old key
    clock[0] = 330.0
    assert keys.refresh_due()
    assert keys.resolve(old_kid) is None and keys.fetches == 3  # this lookup fetched
    assert keys.get(old_kid) is None and keys.kids == [both.active_kid]
    assert not keys.refresh_due()
    client.close()


def test_a_key_set_no_fetch_refreshed_for_max_age_vouches_for_nothing() -> None:
    """TM-61: the last good set serves while fetches fail, but only for ``max_age``
    seconds after the last one that succeeded; then every lookup fails closed (503
    ``key_set_stale``), the network-free one too, until a fetch succeeds again. A lookup
    past the bound makes its own fetch attempt first (rate limited)."""
    import nacl.signing

    from tasklease.rules.jws import jwk_thumbprint
    from tasklease.verify import KeySetStale, VerifierUnavailable
    from tasklease.verify._jwks import KeySet

    key = nacl.signing.SigningKey.generate()
    served: list[Any] = [KeyRing(key).jwks()]

    def answer(_request: httpx.Request) -> httpx.Response:
        body = served[0]
        return httpx.Response(503) if body is None else httpx.Response(200, json=body)

    clock = [0.0]
    client = httpx.Client(base_url="http://broker", transport=httpx.MockTransport(answer))
    keys = KeySet(client, ttl=300, min_interval=30, max_age=3600, monotonic=lambda: clock[0])
    kid = jwk_thumbprint(bytes(key.verify_key))
    with pytest.raises(KeySetStale):  # never fetched: nothing to vouch with
        keys.get(kid)
    assert keys.refresh() and keys.age() == 0.0
    served[0] = None  # the broker is away from now on
    clock[0] = 3600.0  # at the bound: still served, the failed fetch by age kept the set
    assert keys.resolve(kid) is not None and keys.get(kid) is not None
    clock[0] = 3600.5
    with pytest.raises(KeySetStale) as caught:
        keys.get(kid)
    assert isinstance(caught.value, VerifierUnavailable)
    assert caught.value.code == "key_set_stale" and caught.value.bound == 3600
    assert "last fetched 3600.5 s ago" in caught.value.message and kid not in caught.value.message
    fetches = keys.fetches
    with pytest.raises(KeySetStale):
        keys.resolve(kid)  # it tried the network first (the last attempt was 0.5 s ago)
    assert keys.fetches == fetches
    clock[0] = 3631.0
    with pytest.raises(KeySetStale):
        keys.resolve(kid)
    assert keys.fetches == fetches + 1  # tried, failed: still closed
    served[0] = KeyRing(key).jwks()  # back
    clock[0] = 3662.0
    assert keys.resolve(kid) is not None and keys.fetches == fetches + 2
    assert keys.get(kid) is not None and keys.age() == 0.0
    client.close()


_WELL_FORMED: dict[str, Any] = {
    "iss": "tasklease",
    "sub": "s",
    "aud": ["svc-a"],
    "exp": 3_000_000_000,
    "nbf": 1_000,
    "iat": 1_000,
    "jti": "j",
    "scope": ["read:data:1"],
    "client_id": "c",
}
_VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.text(max_size=3),
    st.lists(st.one_of(st.text(max_size=3), st.integers()), max_size=3),
    st.lists(st.text(min_size=1, max_size=3), min_size=60, max_size=70),
)


@settings(max_examples=300, deadline=None)
@given(
    changes=st.dictionaries(
        st.sampled_from([*_WELL_FORMED, "lineage", "principal", "task_id", "chain_hash"]),
        st.one_of(_VALUES, st.just(_ABSENT)),
        max_size=3,
    )
)
def test_the_fast_claim_parse_answers_as_the_checked_one(changes: dict[str, Any]) -> None:
    """parse_claims's inline checks (lineage_of written out among them) give the answer of
    the claim-by-claim path built on tasklease.rules.claims, for any payload."""
    from tasklease.verify._claims import _parse_claims_checked

    payload = {**_WELL_FORMED, **changes}
    payload = {k: v for k, v in payload.items() if v is not _ABSENT}

    def answer(parse: Any) -> Any:
        try:
            return parse(dict(payload))
        except InvalidToken as exc:
            return exc.reason

    fast = answer(lambda p: parse_claims(p))
    checked = answer(lambda p: _parse_claims_checked(p, False))
    if isinstance(checked, VerifiedToken):
        assert type(fast) is VerifiedToken
        assert dataclasses.asdict(fast) == dataclasses.asdict(checked)
    else:
        assert fast == checked


# Would fail if: the verifier took a key from a JWK that carries its private half: anyone
# who read that JWK Set could sign tokens it accepts.
def test_a_key_published_with_its_private_half_verifies_nothing() -> None:
    class Clock:
        def now(self) -> float:
            return 1_000_000.0

    ring, other = KeyRing.generate(), KeyRing.generate()
    jwks = {"keys": ring.jwks()["keys"] + other.jwks()["keys"]}
    leaked = next(jwk for jwk in jwks["keys"] if jwk["kid"] == ring.active_kid)
    leaked["d"] = "A" * 43  # a private member: this key's secret is out
    transport = httpx.MockTransport(lambda request: httpx.Response(200, json=jwks))
    verifier = Verifier(
        "https://broker", audience="svc-a", feed=False, transport=transport, clock=Clock()
    )
    claims = {
        "iss": "tasklease",
        "sub": "s",
        "aud": ["svc-a"],
        "exp": 1_000_060,
        "nbf": 1_000_000,
        "iat": 1_000_000,
        "jti": "j",
        "scope": [],
        "client_id": "c",
    }
    payload = json.dumps(claims).encode()
    assert verifier.verify(other.sign(payload, KIND_AGENT)).sub == "s"  # the set is read
    with pytest.raises(InvalidToken) as caught:
        verifier.verify(ring.sign(payload, KIND_AGENT))
    assert caught.value.reason == "unknown kid"
    verifier.close()
