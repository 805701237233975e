"""Zero-trust enforcement in the core: audience binding, why-denied tracing,
token kinds, holder revocation, by-reference tokens and introspection, high assurance,
certificate binding and DPoP."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import pytest
from nacl.signing import SigningKey
from security_support import (
    CTX,
    HTU,
    START,
    admin,
    app,
    dpop_proof,
    launch,
    make_broker,
    register,
    token_parts,
)

from tasklease.core.broker import Broker, RequestContext
from tasklease.core.errors import (
    Forbidden,
    InvalidDPoPProof,
    InvalidRequest,
    InvalidTarget,
    Unauthorized,
)
from tasklease.core.introspection import is_reference_token
from tasklease.core.store import AuditQuery
from tasklease.core.tokens import KIND_ADMIN, KIND_AGENT, KIND_APP, KIND_DPOP_PROOF
from tasklease.core.validation import TokenRejected
from tasklease.rules import jws as _jws
from tasklease.rules.binding import BindingError, DPoPVerifier, MemoryProofLedger, normalize_htu


def events(broker: Broker, event_type: str | None = None) -> list[Any]:
    found, _ = broker.store.query_audit(AuditQuery(event_type=event_type, limit=1000))
    return found


def audited_denial(broker: Broker, denial_id: str | None) -> Any:
    """The one audit event carrying ``denial=<denial_id>``."""
    assert denial_id is not None and denial_id.startswith("den_") and len(denial_id) == 20
    hits = [e for e in events(broker) if e.detail.endswith(f"denial={denial_id}")]
    assert len(hits) == 1, [e.detail for e in events(broker)]
    return hits[0]


# --- 1. audience binding (RFC 8707) --------------------------------------------------------


def test_registration_resource_becomes_the_single_audience() -> None:
    broker = make_broker()
    issued = register(broker, resource="https://mcp.example/files")
    assert issued.claims.aud == ("https://mcp.example/files",)
    assert token_parts(issued.token)[1]["aud"] == ["https://mcp.example/files"]
    # The resource server that owns it accepts it; another refuses it; so does a check
    # for the broker's default audience.
    assert broker.validate(issued.token, audience="https://mcp.example/files")
    with pytest.raises(TokenRejected, match="audience"):
        broker.validate(issued.token, audience="https://mcp.example/payments")
    with pytest.raises(TokenRejected, match="audience"):
        broker.validate(issued.token)
    # ...and the broker's own endpoints still take it (decisions: "Audience-bound tokens").
    assert broker.authenticate(f"Bearer {issued.token}", CTX).sub == issued.claims.sub


def test_launch_token_resources_are_a_ceiling() -> None:
    broker = make_broker()
    lt = launch(broker, resource=["mcp-files", "mcp-mail"], single_use=False)
    assert register(broker, launch_token=lt, resource="mcp-mail").claims.aud == ("mcp-mail",)
    with pytest.raises(InvalidTarget):
        register(broker, launch_token=lt, resource="mcp-payments")
    with pytest.raises(InvalidTarget, match="choose one"):
        register(broker, launch_token=lt)
    denied = [e for e in events(broker, "registration_policy_violation")]
    assert any("resource refused" in e.detail for e in denied)
    only = launch(broker, resource="mcp-files")
    assert register(broker, launch_token=only).claims.aud == ("mcp-files",)


@pytest.mark.parametrize("bad", ["", " x", "a b", "https://x/#frag", "x" * 513, 5, ["a"]])
def test_malformed_resources_are_invalid_target(bad: object) -> None:
    broker = make_broker()
    if bad == "":
        assert register(broker, resource=bad).claims.aud == ("tasklease",)
        return
    with pytest.raises(InvalidTarget):
        register(broker, resource=bad)


def test_delegation_only_narrows_the_audience() -> None:
    broker = make_broker()
    root = register(broker, ("read:data:*",))
    other = register(broker, ("read:data:*",))
    # default audience -> one resource: narrowing
    narrowed = broker.delegate(
        root.claims,
        delegate_to=other.claims.sub,
        scope=["read:data:x"],
        ttl=None,
        ctx=CTX,
        resource="mcp-files",
    )
    assert narrowed.claims.aud == ("mcp-files",)
    bound = register(broker, resource="mcp-files")
    same = broker.delegate(
        bound.claims, delegate_to=other.claims.sub, scope=["read:data:x"], ttl=None, ctx=CTX
    )
    assert same.claims.aud == ("mcp-files",)
    with pytest.raises(InvalidTarget) as info:
        broker.delegate(
            bound.claims,
            delegate_to=other.claims.sub,
            scope=["read:data:x"],
            ttl=None,
            ctx=CTX,
            resource="mcp-payments",
        )
    assert "audience would widen" in audited_denial(broker, info.value.denial_id).detail


def test_a_token_that_passes_one_resource_fails_another() -> None:
    broker = make_broker()
    for resource, other in (("mcp-a", "mcp-b"), ("https://a.example/", "https://b.example/")):
        token = register(broker, resource=resource).token
        assert broker.validate(token, audience=resource)
        with pytest.raises(TokenRejected):
            broker.validate(token, audience=other)


# --- 2. why-denied tracing -------------------------------------------------------------------


def test_every_authentication_refusal_has_a_denial_id_in_the_audit() -> None:
    broker = make_broker()
    agent = register(broker)
    for header in (None, "Basic x", "Bearer not-a-token", f"Bearer {agent.token}x"):
        with pytest.raises(Unauthorized) as info:
            broker.authenticate(header, CTX)
        event = audited_denial(broker, info.value.denial_id)
        assert event.outcome == "denied"
        assert info.value.detail in (
            "missing authorization header",
            "invalid authorization scheme",
            "token verification failed",
        )
    with pytest.raises(Forbidden) as forbidden:
        broker.authenticate(f"Bearer {agent.token}", CTX, kinds=frozenset({KIND_ADMIN}))
    assert audited_denial(broker, forbidden.value.denial_id).event_type == "scope_violation"


def test_failed_nonce_signature_carries_a_denial_id() -> None:
    broker = make_broker()
    lt = launch(broker)
    key, other = SigningKey.generate(), SigningKey.generate()
    nonce, _ = broker.challenge()
    import base64

    with pytest.raises(Unauthorized) as info:
        broker.register(
            launch_token=lt,
            nonce=nonce,
            public_key=base64.b64encode(bytes(key.verify_key)).decode(),
            signature=base64.b64encode(other.sign(bytes.fromhex(nonce)).signature).decode(),
            orch_id="o",
            task_id="t",
            requested_scope=["read:data:*"],
            ctx=CTX,
        )
    assert "nonce signature" in audited_denial(broker, info.value.denial_id).detail


# --- 3. one kind per typ (RFC 9068, RFC 8725 section 3.11) -------------------------------------


def test_every_kind_has_its_own_typ_and_none_passes_as_another() -> None:
    kinds = {KIND_AGENT, KIND_ADMIN, KIND_APP, KIND_DPOP_PROOF}
    assert len(kinds) == 4 and KIND_AGENT == "at+jwt"
    broker = make_broker()
    agent, adm, ap = register(broker), admin(broker), app(broker)
    for token, kind in ((agent.token, KIND_AGENT), (adm.token, KIND_ADMIN), (ap.token, KIND_APP)):
        assert token_parts(token)[0]["typ"] == kind
        for other in kinds - {kind}:
            with pytest.raises(TokenRejected, match="typ"):
                broker.validator.validate(token, (other,))
    for token in (adm.token, ap.token):
        with pytest.raises(TokenRejected, match="typ"):
            broker.validate(token)  # the resource servers' check takes agent tokens only
    with pytest.raises(Forbidden):
        broker.authenticate(f"Bearer {agent.token}", CTX, kinds=frozenset({KIND_ADMIN}))
    with pytest.raises(Forbidden):
        broker.authenticate(f"Bearer {adm.token}", CTX, kinds=frozenset({KIND_AGENT}))
    # A DPoP proof is never a token of ours, even signed with our key.
    proof = dpop_proof(SigningKey.generate())
    with pytest.raises(Unauthorized):
        broker.authenticate(f"Bearer {proof}", CTX)


def test_agent_tokens_have_the_rfc9068_claims() -> None:
    broker = make_broker()
    claims = token_parts(register(broker).token)[1]
    for name in ("iss", "sub", "aud", "exp", "iat", "jti", "client_id"):
        assert name in claims


# --- 4. RFC 7009 revocation by the holder ------------------------------------------------------


def test_holder_revocation_is_idempotent_and_quiet_about_unknown_tokens() -> None:
    broker = make_broker()
    agent = register(broker)
    caller = broker.authenticate(f"Bearer {agent.token}", CTX)
    assert broker.revoke_token(caller, token="garbage", token_type_hint=None, ctx=CTX) is False
    assert broker.revoke_token(caller, token=agent.token, token_type_hint="x", ctx=CTX) is True
    with pytest.raises(TokenRejected, match="revoked"):
        broker.validate(agent.token)
    # Again: nothing left to do, still no error.
    assert broker.revoke_token(caller, token=agent.token, token_type_hint=None, ctx=CTX) is False
    assert events(broker, "token_revocation_ignored")
    with pytest.raises(InvalidRequest):
        broker.revoke_token(caller, token="", token_type_hint=None, ctx=CTX)


def test_holder_may_not_revoke_another_agents_token() -> None:
    broker = make_broker()
    mine, theirs = register(broker), register(broker)
    caller = broker.authenticate(f"Bearer {mine.token}", CTX)
    with pytest.raises(Forbidden) as info:
        broker.revoke_token(caller, token=theirs.token, token_type_hint=None, ctx=CTX)
    assert audited_denial(broker, info.value.denial_id).event_type == "token_revocation_denied"
    assert broker.validate(theirs.token)


# --- 5. by-reference tokens and introspection (RFC 7662) ----------------------------------


def _many_scopes(n: int) -> list[str]:
    return [f"read:dataset-{i:04d}-with-a-rather-long-descriptive-name:*" for i in range(n)]


def test_large_tokens_are_issued_by_reference_and_work_everywhere() -> None:
    broker = make_broker()
    scope = _many_scopes(60)
    big = register(broker, scope)
    assert is_reference_token(big.token) and len(big.token) == 47
    record = broker.store.get_reference_token(
        __import__("hashlib").sha256(big.token.encode()).hexdigest()
    )
    assert record is not None and big.token not in record.claims  # stored hashed
    assert broker.validate(big.token).scope == tuple(scope)
    caller = broker.authenticate(f"Bearer {big.token}", CTX)
    renewed = broker.renew(caller, CTX)
    assert is_reference_token(renewed.token)
    answer = broker.introspect(admin(broker).claims, token=renewed.token, ctx=CTX)
    assert answer["active"] is True and answer["sub"] == big.claims.sub
    assert answer["scope"] == " ".join(scope) and answer["token_type"] == "Bearer"
    # The predecessor was revoked by the renewal: introspection says nothing more.
    assert broker.introspect(admin(broker).claims, token=big.token, ctx=CTX) == {"active": False}
    small = register(broker)
    assert not is_reference_token(small.token)


@pytest.mark.parametrize("token", ["", "x", "tlr_" + "A" * 43, "eyJ.eyJ.x"])
def test_introspection_of_anything_inactive_is_exactly_active_false(token: str) -> None:
    broker = make_broker()
    if not token:
        with pytest.raises(InvalidRequest):
            broker.introspect(admin(broker).claims, token=token, ctx=CTX)
        return
    assert broker.introspect(admin(broker).claims, token=token, ctx=CTX) == {"active": False}


def test_introspection_audience_and_app_isolation() -> None:
    broker = make_broker()
    bound = register(broker, resource="mcp-files")
    adm = admin(broker).claims
    assert broker.introspect(adm, token=bound.token, audience="mcp-files", ctx=CTX)["active"]
    inactive = broker.introspect(adm, token=bound.token, audience="mcp-mail", ctx=CTX)
    assert inactive == {"active": False}
    # An app sees its own agents' tokens only (client_id "admin" here is not the app's).
    assert broker.introspect(app(broker).claims, token=bound.token, ctx=CTX) == {"active": False}
    expired_broker = make_broker()
    token = register(expired_broker).token
    expired_broker.clock.advance(10_000)  # type: ignore[attr-defined]
    assert expired_broker.introspect(admin(expired_broker).claims, token=token, ctx=CTX) == {
        "active": False
    }


# --- 6. high assurance -------------------------------------------------------------------------


def test_critical_scopes_read_the_store_not_the_cache() -> None:
    broker = make_broker(critical_scopes=("write:payments:*",))
    agent = register(broker, ("write:payments:acct-1",))
    plain = register(broker, ("read:data:*",))
    assert broker.validate(agent.token)
    assert any("high_assurance=true" in e.detail for e in events(broker, "token_validated"))
    before = len(events(broker, "token_validated"))
    assert broker.validate(plain.token)
    assert len(events(broker, "token_validated")) == before  # ordinary: not audited
    # A revocation another process committed: in the store, not yet in our index.
    from tasklease.core.store import RevocationRecord

    with broker.store.write() as tx:
        tx.insert_revocation(RevocationRecord("agent", agent.claims.sub, int(START), START + 9e3))
    assert broker.validate(plain.token)  # the cache knows nothing yet...
    with pytest.raises(TokenRejected, match="high_assurance=true"):
        broker.validate(agent.token)  # ...the high-assurance path does
    assert any("high_assurance=true" in e.detail for e in events(broker, "token_validation_failed"))
    with pytest.raises(Unauthorized) as info:
        broker.authenticate(f"Bearer {agent.token}", CTX)
    assert "high_assurance=true" in audited_denial(broker, info.value.denial_id).detail


def test_critical_scope_requires_an_active_agent_record() -> None:
    broker = make_broker(critical_scopes=("write:payments:*",))
    agent = register(broker, ("write:payments:*",))
    with broker.store.write() as tx:
        tx.set_agent_status(agent.claims.sub, "revoked")
    with pytest.raises(TokenRejected, match="agent record is revoked"):
        broker.validate(agent.token)


def _replica(broker: Broker) -> Broker:
    """Another replica of ``broker``: the same store and keys, its own revocation index."""
    return Broker(
        broker.config, broker.store, broker.keyring, clock=broker.clock, nonce_secret=b"n" * 32
    )


def test_critical_scope_sees_an_ancestor_revoked_by_another_replica() -> None:
    """A revoked parent token ends its descendants through their lineage (a chain entry on
    its jti): the live read fetches those entries, not only the holder's and the chain's."""
    broker = make_broker(critical_scopes=("write:payments:*",))
    parent = register(broker, ("write:payments:*",))
    helper = register(broker, ("read:data:*",))
    child = broker.delegate(
        parent.claims,
        delegate_to=helper.claims.sub,
        scope=["write:payments:acct-1"],
        ttl=None,
        ctx=CTX,
    )
    assert parent.claims.jti in child.claims.lineage
    assert broker.validate(child.token)
    other = _replica(broker)
    other.revoke(admin(other).claims, level="token", target=parent.claims.jti, ctx=CTX)
    with pytest.raises(TokenRejected, match=r"level chain, live read\) high_assurance=true"):
        broker.validate(child.token)  # this replica's index has not heard of it yet


def test_critical_scope_sees_an_app_deregistered_by_another_replica() -> None:
    """Deregistering an app ends the agents it launched (``app:<id>`` in their lineage)."""
    broker = make_broker(critical_scopes=("write:payments:*",))
    record, secret = broker.register_app(
        admin(broker).claims, name="payments", scopes=["write:payments:*"], token_ttl=None, ctx=CTX
    )
    app_token = broker.app_auth(record.client_id, secret, CTX)
    launch_token, _ = broker.create_launch_token(
        app_token.claims,
        agent_name="payer",
        allowed_scope=["write:payments:*"],
        max_ttl=None,
        single_use=None,
        ttl=None,
        ctx=CTX,
    )
    agent = register(broker, ("write:payments:acct-1",), launch_token=launch_token)
    assert f"app:{record.app_id}" in agent.claims.lineage
    assert broker.validate(agent.token)
    other = _replica(broker)
    other.deregister_app(admin(other).claims, record.app_id, CTX)
    with pytest.raises(TokenRejected, match="high_assurance=true"):
        broker.validate(agent.token)


# A critical scope held as a limited grant: it travels only in authorization_details, never
# in the scope claim, and allows what the scope names all the same.
LIMITED_PAYMENT = {"type": "scope", "scope": "write:payments:acct-1", "limits": {"max_calls": 3}}


def test_a_critical_scope_held_as_a_limited_grant_reads_the_store() -> None:
    """Only the scope claim used to count: this token was validated from the cache and the
    index, and stayed valid after another replica revoked its agent."""
    broker = make_broker(critical_scopes=("write:payments:*",))
    agent = register(
        broker,
        (),
        launch_token=launch(broker, ("write:payments:*",)),
        authorization_details=[LIMITED_PAYMENT],
    )
    assert agent.claims.scope == () and agent.claims.details == (LIMITED_PAYMENT,)
    assert broker.validate(agent.token)
    validated = [e.detail for e in events(broker, "token_validated")]
    assert any("high_assurance=true" in d and agent.claims.jti in d for d in validated)
    other = _replica(broker)
    other.revoke(admin(other).claims, level="agent", target=agent.claims.sub, ctx=CTX)
    with pytest.raises(TokenRejected, match=r"level agent, live read\) high_assurance=true"):
        broker.validate(agent.token)  # this replica's index has not heard of it yet
    with pytest.raises(Unauthorized) as info:
        broker.authenticate(f"Bearer {agent.token}", CTX)
    assert "high_assurance=true" in audited_denial(broker, info.value.denial_id).detail


# --- 7. certificate-bound tokens (RFC 8705) ----------------------------------------------------

ALICE, MALLORY = "A" * 43, "B" * 43


def test_registration_over_mtls_binds_every_token_to_the_certificate() -> None:
    broker = make_broker()
    over_mtls = dataclasses.replace(CTX, cert_thumbprint=ALICE)
    agent = register(broker, ctx=over_mtls)
    assert agent.claims.raw["cnf"] == {"x5t#S256": ALICE}
    assert broker.authenticate(f"Bearer {agent.token}", over_mtls)
    for ctx in (CTX, dataclasses.replace(CTX, cert_thumbprint=MALLORY)):
        with pytest.raises(Unauthorized) as info:
            broker.authenticate(f"Bearer {agent.token}", ctx)
        assert "certificate" in audited_denial(broker, info.value.denial_id).detail
    renewed = broker.renew(broker.authenticate(f"Bearer {agent.token}", over_mtls), over_mtls)
    assert renewed.claims.raw["cnf"] == {"x5t#S256": ALICE}
    from tasklease.rules.binding import Presentation

    assert broker.validate(renewed.token, presented=Presentation(cert_thumbprint=ALICE))
    with pytest.raises(TokenRejected, match="certificate"):
        broker.validate(renewed.token)
    with pytest.raises(TokenRejected, match="another certificate"):
        broker.validate(renewed.token, presented=Presentation(cert_thumbprint=MALLORY))


def test_delegated_tokens_bind_to_the_delegate_not_the_delegator() -> None:
    broker = make_broker()
    delegator = register(broker, ctx=dataclasses.replace(CTX, cert_thumbprint=ALICE))
    delegate = register(broker, ctx=dataclasses.replace(CTX, cert_thumbprint=MALLORY))
    unbound = register(broker)
    hop = broker.delegate(
        delegator.claims,
        delegate_to=delegate.claims.sub,
        scope=["read:data:x"],
        ttl=None,
        ctx=CTX,
    )
    assert hop.claims.raw["cnf"] == {"x5t#S256": MALLORY}
    to_unbound = broker.delegate(
        delegator.claims,
        delegate_to=unbound.claims.sub,
        scope=["read:data:x"],
        ttl=None,
        ctx=CTX,
    )
    assert "cnf" not in to_unbound.claims.raw


# --- 8. DPoP (RFC 9449) -------------------------------------------------------------------------


def _dpop_agent(broker: Broker) -> tuple[Any, SigningKey]:
    key = SigningKey.generate()
    url = "https://broker.example/v1/register"
    ctx = dataclasses.replace(CTX, dpop=dpop_proof(key, htu=url), method="POST", url=url)
    return register(broker, ctx=ctx), key


def _dpop_ctx(key: SigningKey, token: str, **proof: Any) -> RequestContext:
    return dataclasses.replace(
        CTX, dpop=dpop_proof(key, token=token, **proof), method="POST", url=HTU
    )


def test_dpop_bound_token_needs_a_fresh_proof_every_time() -> None:
    broker = make_broker()
    agent, key = _dpop_agent(broker)
    jkt = agent.claims.raw["cnf"]["jkt"]
    from tasklease.core.keys import jwk_thumbprint

    assert jkt == jwk_thumbprint(bytes(key.verify_key))
    ctx = _dpop_ctx(key, agent.token)
    assert broker.authenticate(f"DPoP {agent.token}", ctx).sub == agent.claims.sub
    attempts = {
        "replayed": (f"DPoP {agent.token}", ctx),
        "bearer": (f"Bearer {agent.token}", _dpop_ctx(key, agent.token)),
        "no proof": (f"DPoP {agent.token}", CTX),
        "other key": (f"DPoP {agent.token}", _dpop_ctx(SigningKey.generate(), agent.token)),
        "wrong ath": (f"DPoP {agent.token}", _dpop_ctx(key, agent.token + "x")),
        "wrong htm": (f"DPoP {agent.token}", _dpop_ctx(key, agent.token, htm="GET")),
        "wrong htu": (
            f"DPoP {agent.token}",
            _dpop_ctx(key, agent.token, htu="https://evil.example/v1/token/renew"),
        ),
        "stale": (f"DPoP {agent.token}", _dpop_ctx(key, agent.token, iat=START - 120)),
        "future": (f"DPoP {agent.token}", _dpop_ctx(key, agent.token, iat=START + 120)),
    }
    for name, (header, attempt) in attempts.items():
        with pytest.raises(Unauthorized) as info:
            broker.authenticate(header, attempt)
        event = audited_denial(broker, info.value.denial_id)
        assert "DPoP" in event.detail, (name, event.detail)
    plain = register(broker)
    with pytest.raises(Unauthorized):  # the DPoP scheme with an unbound token
        broker.authenticate(f"DPoP {plain.token}", _dpop_ctx(key, plain.token))


def test_dpop_registration_proof_is_checked_before_anything_is_consumed() -> None:
    broker = make_broker()
    lt = launch(broker)
    bad = dataclasses.replace(
        CTX, dpop=dpop_proof(SigningKey.generate(), htm="GET"), method="POST", url=HTU
    )
    with pytest.raises(InvalidDPoPProof) as info:  # RFC 9449 section 5
        register(broker, launch_token=lt, ctx=bad)
    assert "DPoP" in audited_denial(broker, info.value.denial_id).detail
    assert register(broker, launch_token=lt)  # the launch token is still there


def test_dpop_proof_header_rules() -> None:
    verifier = DPoPVerifier(60)
    key = SigningKey.generate()
    x = _jws.b64url_encode(bytes(key.verify_key))
    good_jwk = {"kty": "OKP", "crv": "Ed25519", "x": x}
    headers: list[dict[str, Any]] = [
        {"typ": "JWT", "alg": "EdDSA", "jwk": good_jwk},
        {"typ": "dpop+jwt", "alg": "ES256", "jwk": good_jwk},
        {"typ": "dpop+jwt", "alg": "EdDSA", "jwk": {**good_jwk, "d": x}},  # private key
        {"typ": "dpop+jwt", "alg": "EdDSA", "jwk": good_jwk, "kid": "x"},
        {"typ": "dpop+jwt", "alg": "EdDSA", "jwk": {"kty": "EC", "crv": "P-256", "x": x}},
    ]
    for header in headers:
        with pytest.raises(BindingError):
            verifier.verify(dpop_proof(key, header=header), htm="POST", htu=HTU, now=START)
    assert verifier.verify(dpop_proof(key), htm="POST", htu=HTU + "?q=1", now=START)


def test_dpop_replay_cache_is_bounded_by_the_window() -> None:
    elapsed = [START]  # the time that elapsed moves with the clock here (no step)
    verifier = DPoPVerifier(60, ledger=MemoryProofLedger(3, monotonic=lambda: elapsed[0]))
    key = SigningKey.generate()
    for i in range(3):
        verifier.verify(dpop_proof(key, iat=START + i), htm="POST", htu=HTU, now=START + i)
    with pytest.raises(BindingError, match="full"):
        verifier.verify(dpop_proof(key, iat=START + 3), htm="POST", htu=HTU, now=START + 3)
    # Once the window has passed, the old jtis are forgotten (they could not be replayed).
    elapsed[0] = START + 100
    verifier.verify(dpop_proof(key, iat=START + 100), htm="POST", htu=HTU, now=START + 100)
    assert len(verifier) == 1


def test_htu_normalization() -> None:
    assert normalize_htu("HTTPS://Broker.Example:443/v1/x?y#z") == "https://broker.example/v1/x"
    assert normalize_htu("http://127.0.0.1:8080/a") == "http://127.0.0.1:8080/a"
    assert normalize_htu("ftp://x/") is None and normalize_htu("/relative") is None


def test_malformed_cnf_is_refused() -> None:
    broker = make_broker()
    from tasklease.core.tokens import mint

    for cnf in ({"unknown": "x"}, {"jkt": ""}):
        token, _ = mint(
            broker.keyring,
            kind=KIND_AGENT,
            iss="tasklease",
            sub="spiffe://x/y",
            aud=("tasklease",),
            iat=int(START),
            ttl=60,
            scope=("read:data:*",),
            client_id="admin",
            cnf=cnf,
        )
        with pytest.raises(TokenRejected, match="cnf"):
            broker.validate(token)
    json.dumps({})  # keep the import used in every path
