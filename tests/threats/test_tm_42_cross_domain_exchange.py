# Would fail if: token exchange accepted a federated domain's token signed with a key
# outside that domain's bundle, with another algorithm, expired, made for another audience
# or domain, from a domain not declared, or granted more than the federation's mapping;
# or took back a chain naming our agent in a hop no token of ours allowed.
"""TM-42 — cross-domain escalation through token exchange: a token of a federated domain
(or one claiming to be) is turned into more authority here than that domain's agents
hold, than this broker's operators agreed to, or at all when it was not meant for us.

The broker under attack (B, ``tasklease.local``) federates ``a.example`` with a static
bundle and a mapping (``read:data:*`` of A is ``read:partner:*`` here, ceiling
``read:partner:*``, at most 120 s). A is a broker of its own (in this process); its agent
narrows its token to ``spiffe://tasklease.local`` as A's agents do before handing work to
B. Every attack is refused as ``invalid_request`` (or ``invalid_scope``) with a denial id
leading to exactly one audit event, and nothing is issued.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from typing import Any

import pytest
from e2e_support import Agent, RunningBroker, b64url, jwt_parts
from nacl.signing import SigningKey
from threat_support import compact, refused

from tasklease.core.broker import Broker, RequestContext
from tasklease.core.clock import ManualClock
from tasklease.core.config import Config
from tasklease.core.delegation import record_signing_input
from tasklease.core.exchange import ACCESS_TOKEN_TYPE, GRANT_TYPE, ExchangeRequest
from tasklease.core.keys import KeyRing
from tasklease.core.tokens import ADMIN_SCOPES, KIND_ADMIN, KIND_AGENT, DelegationRecord, mint
from tasklease.rules.bundle import TrustBundle, serialize_bundle
from tasklease.storage import MemoryStore

pytestmark = pytest.mark.slow

US = "spiffe://tasklease.local"
CTX = RequestContext(request_id="tm-42")


class Domain:
    """Another broker (in this process, on its own keys) whose agents' tokens we forge
    nothing for: they are what that broker really issues."""

    def __init__(
        self, trust_domain: str, clock: ManualClock | None = None, keyring: KeyRing | None = None
    ) -> None:
        self.broker = Broker(
            Config(trust_domain=trust_domain, issuer=f"https://{trust_domain}"),
            MemoryStore(),
            keyring or KeyRing.generate(),
            clock=clock,
            nonce_secret=b"n" * 32,
        )

    def bundle(self) -> str:
        ring = self.broker.keyring
        keys = {k: bytes(v) for k in ring.kids() if (v := ring.verify_key(k)) is not None}
        return serialize_bundle(TrustBundle(self.broker.config.trust_domain, 1, 300, keys)).decode()

    def token_for(self, audience: str, scope: str = "read:data:7") -> str:
        """An agent of this domain registers, then narrows its token to ``audience``."""
        b = self.broker
        admin = mint(
            b.keyring,
            kind=KIND_ADMIN,
            iss=b.config.issuer,
            sub="admin",
            aud=b.config.audience,
            iat=int(b.clock.now()),
            ttl=300,
            scope=ADMIN_SCOPES,
            client_id="admin",
        )[1]
        launch, _ = b.create_launch_token(
            admin,
            agent_name="worker",
            allowed_scope=["read:data:*", "write:data:*"],
            max_ttl=None,
            single_use=None,
            ttl=None,
            ctx=CTX,
        )
        key = SigningKey.generate()
        nonce, _ = b.challenge()
        agent = b.register(
            launch_token=launch,
            nonce=nonce,
            public_key=base64.b64encode(bytes(key.verify_key)).decode(),
            signature=base64.b64encode(key.sign(bytes.fromhex(nonce)).signature).decode(),
            orch_id="orch",
            task_id="task-1",
            requested_scope=["read:data:*", "write:data:*"],
            ctx=CTX,
        )
        narrowed = b.exchange_token(
            ExchangeRequest(
                grant_type=GRANT_TYPE,
                subject_token=agent.token,
                subject_token_type=ACCESS_TOKEN_TYPE,
                scope=scope,
                resource=audience,
            ),
            CTX,
        )
        return narrowed.token


@pytest.fixture(scope="module")
def a() -> Domain:
    return Domain("a.example")


@pytest.fixture(scope="module")
def federated(broker: RunningBroker, a: Domain) -> RunningBroker:
    resp = broker.post(
        "/v1/admin/federations",
        json={
            "trust_domain": "a.example",
            "bundle": a.bundle(),
            "scope_map": [["read:data:*", "read:partner:*"]],
            "scope_ceiling": ["read:partner:*"],
            "max_ttl": 120,
        },
        headers=broker.admin_headers(),
    )
    assert resp.status_code in (200, 201), resp.text
    return broker


@pytest.fixture(scope="module")
def bob(federated: RunningBroker) -> Agent:
    return federated.register(["read:partner:*"])


def _exchange(broker: RunningBroker, subject: str, actor: str, **params: str) -> Any:
    form = {
        "grant_type": GRANT_TYPE,
        "subject_token": subject,
        "subject_token_type": ACCESS_TOKEN_TYPE,
        "actor_token": actor,
        "actor_token_type": ACCESS_TOKEN_TYPE,
        **params,
    }
    return broker.post("/v1/oauth/token", data=form)


def test_the_genuine_token_crosses_narrowed(
    federated: RunningBroker, a: Domain, bob: Agent
) -> None:
    resp = _exchange(federated, a.token_for(US), bob.access_token)
    assert resp.status_code == 200, resp.text
    assert resp.json()["scope"] == "read:partner:7"
    assert resp.json()["expires_in"] <= 120


def test_a_key_outside_the_bundle_is_refused(federated: RunningBroker, bob: Agent) -> None:
    impostor = Domain("a.example")  # same name, its own keys
    resp = _exchange(federated, impostor.token_for(US), bob.access_token)
    refused(federated, resp, 400, "invalid_request", "subject_token of a.example", "kid")


def test_another_algorithm_is_refused(federated: RunningBroker, a: Domain, bob: Agent) -> None:
    genuine = a.token_for(US)
    header, payload = jwt_parts(genuine)
    kid = header["kid"]
    public = bytes(a.broker.keyring.verify_key(kid) or b"")
    hs_header = {"alg": "HS256", "typ": "at+jwt", "kid": kid}
    signing_input = (
        b64url(json.dumps(hs_header, separators=(",", ":")).encode())
        + "."
        + b64url(json.dumps(payload, separators=(",", ":")).encode())
    )
    mac = hmac.new(public, signing_input.encode(), hashlib.sha256).digest()
    for forged in (
        signing_input + "." + b64url(mac),
        compact({"alg": "none", "typ": "at+jwt", "kid": kid}, payload, None),
    ):
        resp = _exchange(federated, forged, bob.access_token)
        refused(federated, resp, 400, "invalid_request", "subject_token of a.example")


def test_a_token_for_another_audience_is_refused(
    federated: RunningBroker, a: Domain, bob: Agent
) -> None:
    for audience in ("tasklease", "spiffe://c.example", "https://orders.example"):
        resp = _exchange(federated, a.token_for(audience), bob.access_token)
        refused(federated, resp, 400, "invalid_request", "audience mismatch")


def test_an_expired_token_is_refused(federated: RunningBroker, a: Domain, bob: Agent) -> None:
    # A's own keys, on a clock a long time ago: its token expired long since.
    past = Domain("a.example", clock=ManualClock(1_700_000_000.0), keyring=a.broker.keyring)
    resp = _exchange(federated, past.token_for(US), bob.access_token)
    refused(federated, resp, 400, "invalid_request", "token expired")


def test_an_undeclared_domain_is_refused(federated: RunningBroker, bob: Agent) -> None:
    resp = _exchange(federated, Domain("c.example").token_for(US), bob.access_token)
    refused(federated, resp, 400, "invalid_request", "not federated")


def test_nothing_beyond_the_mapping(federated: RunningBroker, a: Domain, bob: Agent) -> None:
    wider = _exchange(federated, a.token_for(US), bob.access_token, scope="read:partner:*")
    refused(federated, wider, 400, "invalid_scope", "scope would widen")
    unmapped = _exchange(federated, a.token_for(US, scope="write:data:7"), bob.access_token)
    refused(federated, unmapped, 400, "invalid_scope", "maps here")
    raw = _exchange(federated, a.token_for(US), bob.access_token, scope="read:data:7")
    refused(federated, raw, 400, "invalid_scope", "scope would widen")


def test_the_actor_must_be_a_valid_agent_of_ours(
    federated: RunningBroker, a: Domain, bob: Agent
) -> None:
    subject = a.token_for(US)
    resp = _exchange(federated, subject, federated.admin_token())
    refused(federated, resp, 400, "invalid_request")
    resp = _exchange(federated, subject, subject)  # A's token as its own actor
    refused(federated, resp, 400, "invalid_request")


def test_a_peer_that_has_seen_our_token_cannot_forge_a_hop_out_of_here(
    federated: RunningBroker, a: Domain, bob: Agent
) -> None:
    """A has seen a token of our bob (presented to one of A's resource servers, say): its
    id is ours, carrying our MAC. A writes, signed with its own key, "bob delegated to
    A's agent", lists that id as the token it descends from, and asks us to take the
    chain back. Bob's token never named A's domain: the id vouches for no hop out to A,
    so nothing is issued, and the refusal is audited once."""
    _, seen = jwt_parts(bob.access_token)
    scope = tuple(seen["scope"].split())
    at = "2027-01-15T08:00:00Z"
    theirs = "spiffe://a.example/agent/orch/task-1/00112233aabbccdd"
    signed = a.broker.keyring.sign_detached(record_signing_input(seen["sub"], theirs, scope, at))
    record = DelegationRecord(seen["sub"], scope, at, signed.hex())
    forged, _ = mint(
        a.broker.keyring,
        kind=KIND_AGENT,
        iss=a.broker.config.issuer,
        sub=theirs,
        aud=(US,),
        iat=int(a.broker.clock.now()),
        ttl=60,
        scope=("read:data:7",),
        client_id="worker",
        task_id=seen["task_id"],
        orch_id=seen["orch_id"],
        principal=seen.get("principal", ""),
        delegation_chain=(record,),
        lineage=(f"fed:tasklease.local:{seen['jti']}",),
    )
    carol = federated.register(["read:partner:*"])
    resp = _exchange(federated, forged, carol.access_token)
    refused(
        federated,
        resp,
        400,
        "invalid_request",
        f"names our agent {seen['sub']}",
        "none of our token ids vouches for its hop out to a.example",
    )


def test_a_hop_the_domain_never_signed_is_refused(
    federated: RunningBroker, a: Domain, bob: Agent
) -> None:
    """A's token vouches for its delegation records only as far as each carries A's own
    signature: a record signed by any other key is refused, and nothing is issued."""
    root = "spiffe://a.example/agent/orch/task-1/00112233aabbccdd"
    holder = "spiffe://a.example/agent/orch/task-1/44556677eeff0011"
    scope, at = ("read:data:7",), "2027-01-15T08:00:00Z"
    stranger = SigningKey.generate().sign(record_signing_input(root, holder, scope, at))
    record = DelegationRecord(root, scope, at, stranger.signature.hex())
    forged, _ = mint(
        a.broker.keyring,
        kind=KIND_AGENT,
        iss=a.broker.config.issuer,
        sub=holder,
        aud=(US,),
        iat=int(a.broker.clock.now()),
        ttl=60,
        scope=scope,
        client_id="worker",
        task_id="task-1",
        orch_id="orch",
        delegation_chain=(record,),
    )
    resp = _exchange(federated, forged, bob.access_token)
    refused(federated, resp, 400, "invalid_request", "a delegation record a.example never signed")
