"""A model-based test of authority over HTTP: no sequence of requests leaks authority.

Hypothesis drives random sequences of requests against a real broker application in this
process (the ASGI app, over Starlette's test client, on SQLite in a temporary directory):
apps created with their own scope ceilings, narrowed, widened and removed; launch tokens
made by the operator (with a human principal) and by apps (asking within and beyond their
ceiling); registrations (asking within and beyond the launch token); renewals; delegations
and token exchanges (RFC 8693) that narrow, or try to widen; release and RFC 7009 by the
holder; revocation at all four levels; the clock moving. The reference token threshold is
low, so delegated tokens are mostly by reference (``tlr_``) and own tokens JWS.

The model (``test_authority_model.py`` holds the exact kernel one) is conservative: it
knows what must be refused, and what an accepted token may hold at most. After every step,
for every token it ever saw, ``POST /v1/token/validate`` and ``POST /v1/introspect`` agree;
a token the model holds ended is refused by both; an accepted token's scope is within its
parent's, within its registration's (itself within its launch token's and its app's ceiling
at registration), its principal is its root's, its delegation chain names exactly the agents
it passed through. Every answer below 500; every refusal with a ``denial_id`` leads to
exactly one audit event.

``TASKLEASE_MODEL_EXAMPLES`` and ``TASKLEASE_MODEL_STEPS`` scale it up (``make soak``).
"""

from __future__ import annotations

import base64
import os
import secrets
import shutil
import tempfile
from dataclasses import dataclass, field
from typing import Any

import hypothesis.strategies as st
from hypothesis import HealthCheck, settings
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule
from nacl.signing import SigningKey
from starlette.testclient import TestClient

from tasklease.core.broker import Broker
from tasklease.core.clock import ManualClock
from tasklease.core.config import Config
from tasklease.core.keys import KeyRing
from tasklease.core.records import AuditQuery
from tasklease.core.tokens import ADMIN_SCOPES, KIND_ADMIN, mint
from tasklease.rules.scopes import is_subset
from tasklease.storage import open_store

START = 1_800_000_000.0
EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"
ACCESS = "urn:ietf:params:oauth:token-type:access_token"  # noqa: S105 - a URN
PRINCIPALS = ("user:alice@example.com", "user:bob@example.com")
TASKS = ("task-1", "task-2")
UNIVERSE = ("read:data:*", "read:data:1", "read:data:2", "write:data:1", "write:data:*")
SCOPES = st.sampled_from(
    [
        ("read:data:*",),
        ("read:data:1",),
        ("read:data:2",),
        ("write:data:1",),
        ("read:data:1", "write:data:1"),
        ("read:data:*", "write:data:1"),
        ("write:data:*",),
        ("read:data:*", "write:data:*"),
        ("admin:revoke:*",),
    ]
)
RESOURCES = st.sampled_from([None, None, "https://rs1.example/api", "https://rs2.example/api"])
MAX_TOKENS = 24  # keeps the per-step check (two requests a token) cheap
SKEW = Config().clock_skew

EXAMPLES = int(os.environ.get("TASKLEASE_MODEL_EXAMPLES", "0"))
STEPS = int(os.environ.get("TASKLEASE_MODEL_STEPS", "0"))


def b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


@dataclass
class MApp:
    app_id: str
    client_id: str
    secret: str
    ceiling: tuple[str, ...]
    alive: bool = True


@dataclass
class MLaunch:
    token: str
    app: MApp | None
    scope: tuple[str, ...]
    principal: str


@dataclass
class MAgent:
    agent_id: str
    app: MApp | None
    task: str
    scope: tuple[str, ...]
    principal: str


@dataclass
class MToken:
    token: str
    holder: MAgent
    root: MAgent
    parent: MToken | None  # delegated or exchanged from (a renewal keeps its token's)
    scope: tuple[str, ...]
    jti: str
    grant: str  # the first token's jti of its renewal thread
    chain: tuple[str, ...]  # the delegators, oldest first
    exp: int
    aud: str | None = None  # the one resource it was narrowed to (None: the default)
    ended: str = ""  # why the model holds it ended ("" while it may live)
    children: list[MToken] = field(default_factory=list)

    def lineage(self) -> list[MToken]:
        """Its strict ancestors, nearest first."""
        out: list[MToken] = []
        node = self.parent
        while node is not None:
            out.append(node)
            node = node.parent
        return out


class HttpAuthorityMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.clock = ManualClock(START)
        self.directory = tempfile.mkdtemp(prefix="tasklease-http-model-")
        self.broker = Broker(
            Config(
                max_renewals=3,
                renewal_ceiling=900,
                max_ttl=600,
                default_ttl=300,
                delegation_default_ttl=120,
                max_delegation_depth=3,
                launch_token_ttl=600,
                reference_token_threshold=900,
                refusal_burst=1_000_000,
                app_auth_burst=1_000,
            ),
            open_store(os.path.join(self.directory, "broker.db")),
            KeyRing.generate(),
            clock=self.clock,
            nonce_secret=b"h" * 32,
        )
        from tasklease.http.app import create_app

        self.client = TestClient(create_app(self.broker, background=False))
        self.client.__enter__()
        self.apps: list[MApp] = []
        self.launches: list[MLaunch] = []
        self.agents: list[MAgent] = []
        self.tokens: list[MToken] = []
        # jtis (and renewal threads) whose descendants the model holds ended
        self.ended_below: set[str] = set()

    # --- helpers ------------------------------------------------------------------------

    @property
    def now(self) -> int:
        return int(self.clock.now())

    def admin_token(self) -> str:
        cfg = self.broker.config
        token, _ = mint(
            self.broker.keyring,
            kind=KIND_ADMIN,
            iss=cfg.issuer,
            sub="admin",
            aud=cfg.audience,
            iat=self.now,
            ttl=300,
            scope=ADMIN_SCOPES,
            client_id="admin",
        )
        return token

    def admin(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.admin_token()}"}

    def call(self, method: str, path: str, **kw: Any) -> Any:
        resp = self.client.request(method, path, **kw)
        # The 503s a decision answers (docs/decisions.md 142): what would be born revoked by
        # an entry made within the clock skew is refused until Retry-After, audited under a
        # denial id: a run of a task revoked moments ago registers after it
        # (docs/compatibility.md), and an agent whose delegations were revoked moments ago
        # delegates again after it.
        retry = (
            resp.status_code == 503
            and "retry-after" in resp.headers
            and (
                path == "/v1/register"
                or (path == "/v1/delegate" and "revoked moments ago" in resp.text)
            )
        )
        assert resp.status_code < 500 or retry, (method, path, resp.status_code, resp.text)
        if resp.status_code >= 400:
            self.refusal(resp)
        return resp

    def refusal(self, resp: Any) -> None:
        """A refusal with a denial id names exactly one audit event; one without is a
        malformed request (never a decision about authority)."""
        body = resp.json()
        denial = body.get("denial_id")
        if not denial:
            assert resp.status_code == 400, resp.text
            return
        events, _ = self.broker.store.query_audit(AuditQuery(outcome="denied", limit=100_000))
        hits = [e for e in events if e.detail.endswith(f"denial={denial}")]
        assert len(hits) == 1, (resp.text, hits)

    def track(self, tok: MToken) -> MToken:
        self.tokens.append(tok)
        if tok.parent is not None:
            tok.parent.children.append(tok)
        return tok

    def claims_of(self, token: str, audience: str | None = None) -> dict[str, Any] | None:
        body = {"token": token} if audience is None else {"token": token, "audience": audience}
        resp = self.call("POST", "/v1/token/validate", json=body)
        assert resp.status_code == 200, resp.text
        body = resp.json()
        return body["claims"] if body["valid"] else None

    def room(self) -> bool:
        return len(self.tokens) < MAX_TOKENS

    def pick(self, index: int, live: bool) -> MToken | None:
        pool = [t for t in self.tokens if not t.ended and t.exp > self.now] if live else []
        pool = pool or self.tokens
        return pool[index % len(pool)] if pool else None

    def bearer(self, tok: MToken) -> dict[str, str]:
        return {"Authorization": f"Bearer {tok.token}"}

    def born(
        self,
        answer: dict[str, Any],
        parent: MToken,
        holder: MAgent,
        chain: tuple[str, ...],
        resource: str | None,
    ) -> MToken:
        """A token delegated or exchanged from ``parent``: checked at once against it."""
        aud = resource or parent.aud
        assert parent.aud is None or aud == parent.aud, "the audience widened"
        claims = self.claims_of(answer["access_token"], aud)
        assert claims is not None, "a token was issued that is not valid"
        scope = tuple(claims["scope"])
        assert is_subset(scope, parent.scope), (scope, parent.scope)
        assert claims["exp"] <= parent.exp, (claims["exp"], parent.exp)
        assert not parent.ended, f"issued from an ended token: {parent.ended}"
        # A renewed ancestor hands on its delegations; one whose descendants were ended
        # (or the first token of its renewal thread) hands on nothing, now or later.
        dead = [a.jti for a in [parent, *parent.lineage()] if {a.jti, a.grant} & self.ended_below]
        assert not dead, f"issued below an ended token: {dead}"
        tok = MToken(
            answer["access_token"],
            holder,
            parent.root,
            parent,
            scope,
            claims["jti"],
            claims["jti"],
            chain,
            claims["exp"],
            aud,
        )
        return self.track(tok)

    # --- apps and launch tokens ---------------------------------------------------------

    @initialize()
    def setup(self) -> None:
        pass

    @precondition(lambda self: len(self.apps) < 2)
    @rule(ceiling=SCOPES)
    def create_app(self, ceiling: tuple[str, ...]) -> None:
        resp = self.call(
            "POST",
            "/v1/admin/apps",
            json={"name": f"app-{secrets.token_hex(3)}", "scopes": list(ceiling)},
            headers=self.admin(),
        )
        assert resp.status_code == 201, resp.text
        body = resp.json()
        self.apps.append(MApp(body["app_id"], body["client_id"], body["client_secret"], ceiling))

    @precondition(lambda self: bool(self.apps))
    @rule(index=st.integers(0, 9), ceiling=SCOPES)
    def update_app(self, index: int, ceiling: tuple[str, ...]) -> None:
        app = self.apps[index % len(self.apps)]
        resp = self.call(
            "PUT",
            f"/v1/admin/apps/{app.app_id}",
            json={"scopes": list(ceiling)},
            headers=self.admin(),
        )
        if not app.alive:
            assert resp.status_code == 409, resp.text
            return
        assert resp.status_code == 200, resp.text
        app.ceiling = ceiling

    @precondition(lambda self: bool(self.apps))
    @rule(index=st.integers(0, 9))
    def remove_app(self, index: int) -> None:
        app = self.apps[index % len(self.apps)]
        resp = self.call("DELETE", f"/v1/admin/apps/{app.app_id}", headers=self.admin())
        if not app.alive:
            assert resp.status_code == 409, resp.text
            return
        assert resp.status_code in (200, 204), resp.text
        app.alive = False
        for tok in self.tokens:
            if any(a is not None and a.app is app for a in self.agents_of(tok)):
                tok.ended = tok.ended or f"app {app.app_id} removed"

    def agents_of(self, tok: MToken) -> list[MAgent]:
        """The agents a token passed through: its root, its delegators, its holder."""
        by_id = {a.agent_id: a for a in self.agents}
        return [tok.root, *(by_id[a] for a in tok.chain if a in by_id), tok.holder]

    @rule(
        by_app=st.integers(0, 3),
        scope=SCOPES,
        principal=st.sampled_from(PRINCIPALS),
    )
    def create_launch_token(self, by_app: int, scope: tuple[str, ...], principal: str) -> None:
        self.make_launch(by_app, scope, principal)

    def make_launch(self, by_app: int, scope: tuple[str, ...], principal: str) -> MLaunch | None:
        app = self.apps[by_app] if by_app < len(self.apps) else None
        body: dict[str, Any] = {
            "agent_name": "model",
            "allowed_scope": list(scope),
            "single_use": False,
            "max_uses": 5,
        }
        if app is None:
            body["principal"] = principal
            resp = self.call("POST", "/v1/admin/launch-tokens", json=body, headers=self.admin())
            assert resp.status_code == 201, resp.text
            self.launches.append(MLaunch(resp.json()["launch_token"], None, scope, principal))
            return self.launches[-1]
        auth = self.call(
            "POST", "/v1/app/auth", json={"client_id": app.client_id, "client_secret": app.secret}
        )
        if not app.alive:
            assert auth.status_code == 401, auth.text
            return None
        assert auth.status_code == 200, auth.text
        headers = {"Authorization": f"Bearer {auth.json()['access_token']}"}
        # An app names the human its agents work for, or leaves itself as the principal.
        principal = principal if principal == PRINCIPALS[0] else f"app:{app.app_id}"
        if principal == PRINCIPALS[0]:
            body["principal"] = principal
        resp = self.call("POST", "/v1/app/launch-tokens", json=body, headers=headers)
        if not is_subset(scope, app.ceiling):
            assert resp.status_code >= 400, "an app made a launch token beyond its ceiling"
            return None
        assert resp.status_code == 201, resp.text
        self.launches.append(MLaunch(resp.json()["launch_token"], app, scope, principal))
        return self.launches[-1]

    @precondition(lambda self: len(self.tokens) < MAX_TOKENS)
    @rule(
        by_app=st.integers(0, 3),
        scope=SCOPES,
        principal=st.sampled_from(PRINCIPALS),
        task=st.sampled_from(TASKS),
    )
    def onboard(self, by_app: int, scope: tuple[str, ...], principal: str, task: str) -> None:
        """A launch token and an agent registered with it: the common case, taken often."""
        if self.make_launch(by_app, scope, principal) is not None:
            self.register_with(self.launches[-1], scope, task)

    @precondition(lambda self: bool(self.launches) and len(self.tokens) < MAX_TOKENS)
    @rule(
        index=st.integers(0, 99),
        scope=SCOPES,
        narrow=st.booleans(),
        task=st.sampled_from(TASKS),
    )
    def register(self, index: int, scope: tuple[str, ...], narrow: bool, task: str) -> None:
        launch = self.launches[index % len(self.launches)]
        if narrow:
            scope = launch.scope[: 1 + index % len(launch.scope)]
        self.register_with(launch, scope, task)

    def register_with(self, launch: MLaunch, scope: tuple[str, ...], task: str) -> None:
        key = SigningKey.generate()
        nonce = self.call("GET", "/v1/challenge").json()["nonce"]
        resp = self.call(
            "POST",
            "/v1/register",
            json={
                "launch_token": launch.token,
                "nonce": nonce,
                "public_key": b64(bytes(key.verify_key)),
                "signature": b64(key.sign(bytes.fromhex(nonce)).signature),
                "orch_id": "orch-m",
                "task_id": task,
                "requested_scope": list(scope),
            },
        )
        if resp.status_code != 200:
            return
        app = launch.app
        assert is_subset(scope, launch.scope), "registered beyond its launch token"
        assert app is None or app.alive, "registered through a removed app"
        assert app is None or is_subset(scope, app.ceiling), "registered beyond its app"
        answer = resp.json()
        claims = self.claims_of(answer["access_token"])
        assert claims is not None
        assert is_subset(claims["scope"], scope)
        agent = MAgent(claims["sub"], app, task, tuple(claims["scope"]), launch.principal)
        self.agents.append(agent)
        self.track(
            MToken(
                answer["access_token"],
                agent,
                agent,
                None,
                agent.scope,
                claims["jti"],
                claims["jti"],
                (),
                claims["exp"],
            )
        )

    # --- agents' operations -------------------------------------------------------------

    @precondition(lambda self: bool(self.tokens) and len(self.tokens) < MAX_TOKENS)
    @rule(index=st.integers(0, 999), live=st.booleans())
    def renew(self, index: int, live: bool) -> None:
        tok = self.pick(index, live)
        assert tok is not None
        resp = self.call("POST", "/v1/token/renew", headers=self.bearer(tok))
        if resp.status_code != 200:
            return
        assert not tok.ended, f"an ended token was renewed ({tok.ended})"
        claims = self.claims_of(resp.json()["access_token"], tok.aud)
        assert claims is not None
        assert tuple(claims["scope"]) == tok.scope
        tok.ended = "renewed"
        self.track(
            MToken(
                resp.json()["access_token"],
                tok.holder,
                tok.root,
                tok.parent,
                tok.scope,
                claims["jti"],
                tok.grant,
                tok.chain,
                claims["exp"],
                tok.aud,
            )
        )

    @precondition(lambda self: bool(self.tokens) and len(self.tokens) < MAX_TOKENS)
    @rule(
        index=st.integers(0, 999),
        to=st.integers(0, 999),
        scope=SCOPES,
        narrow=st.booleans(),
        live=st.booleans(),
        resource=RESOURCES,
    )
    def delegate(
        self,
        index: int,
        to: int,
        scope: tuple[str, ...],
        narrow: bool,
        live: bool,
        resource: str | None,
    ) -> None:
        tok = self.pick(index, live)
        assert tok is not None and self.agents
        chain = (*tok.chain, tok.holder.agent_id)
        outside = [a for a in self.agents if a.agent_id not in chain]
        pool = outside if live and outside else self.agents
        target = pool[to % len(pool)]
        if narrow:
            scope = tok.scope[: 1 + index % len(tok.scope)]
        body: dict[str, Any] = {"delegate_to": target.agent_id, "scope": list(scope)}
        if resource is not None:
            body["resource"] = resource
        resp = self.call("POST", "/v1/delegate", json=body, headers=self.bearer(tok))
        if resp.status_code != 200:
            return
        assert target.agent_id not in chain, "delegated to an agent already in the chain"
        assert is_subset(scope, tok.scope), "delegated beyond the delegator's scope"
        self.born(resp.json(), tok, target, chain, resource)

    @precondition(lambda self: bool(self.tokens) and len(self.tokens) < MAX_TOKENS)
    @rule(
        index=st.integers(0, 999),
        scope=st.one_of(st.none(), SCOPES),
        narrow=st.booleans(),
        live=st.booleans(),
        resource=RESOURCES,
    )
    def exchange(
        self,
        index: int,
        scope: tuple[str, ...] | None,
        narrow: bool,
        live: bool,
        resource: str | None,
    ) -> None:
        tok = self.pick(index, live)
        assert tok is not None
        if narrow and scope is not None:
            scope = tok.scope[: 1 + index % len(tok.scope)]
        form = {
            "grant_type": EXCHANGE,
            "subject_token": tok.token,
            "subject_token_type": ACCESS,
        }
        if scope is not None:
            form["scope"] = " ".join(scope)
        if resource is not None:
            form["resource"] = resource
        resp = self.call("POST", "/v1/oauth/token", data=form)
        if resp.status_code != 200:
            return
        assert scope is None or is_subset(scope, tok.scope), "exchanged beyond the subject"
        self.born(resp.json(), tok, tok.holder, tok.chain, resource)

    @precondition(lambda self: bool(self.tokens))
    @rule(
        how=st.sampled_from(["release", "rfc7009", "rfc7009-other"]),
        index=st.integers(0, 999),
        other=st.integers(0, 999),
        live=st.booleans(),
    )
    def end_token(self, how: str, index: int, other: int, live: bool) -> None:
        tok = self.pick(index, live)
        assert tok is not None
        before = False  # whether the token named was valid before the request
        if how == "release":
            resp = self.call("POST", "/v1/token/release", headers=self.bearer(tok))
            target = tok
        else:
            target = tok if how == "rfc7009" else self.tokens[other % len(self.tokens)]
            before = self.claims_of(target.token, target.aud) is not None
            resp = self.call(
                "POST",
                "/v1/token/revoke",
                data={"token": target.token},
                headers=self.bearer(tok),
            )
        if how == "rfc7009-other" and target.holder is not tok.holder:
            # Another agent's token is never ended by this holder (403 when it is valid).
            if before:
                assert self.claims_of(target.token, target.aud), "ended another agent's token"
            return
        if resp.status_code >= 400:
            return
        if target.ended or target.exp <= self.now:
            return
        self.end_with_descendants(target, f"{how} of {target.jti}", whole_grant=True)

    def end_with_descendants(self, tok: MToken, why: str, *, whole_grant: bool) -> None:
        tok.ended = tok.ended or why
        self.ended_below.add(tok.jti)
        if whole_grant or tok.jti == tok.grant:
            self.ended_below.add(tok.grant)
        self.mark_below()

    def mark_below(self) -> None:
        for t in self.tokens:
            for a in t.lineage():
                if a.jti in self.ended_below or a.grant in self.ended_below:
                    t.ended = t.ended or f"ancestor {a.jti} ended"

    # --- operators' revocations ---------------------------------------------------------

    @precondition(lambda self: bool(self.tokens))
    @rule(
        level=st.sampled_from(["token", "chain-jti", "agent", "chain-agent", "task"]),
        index=st.integers(0, 999),
        live=st.booleans(),
    )
    def revoke(self, level: str, index: int, live: bool) -> None:
        tok = self.pick(index, live)
        assert tok is not None
        if level in ("token", "chain-jti"):
            target = tok.jti
        elif level == "task":
            target = tok.root.task
        else:
            passed = self.agents_of(tok)
            target = passed[index % len(passed)].agent_id
        wire = {"chain-jti": "chain", "chain-agent": "chain"}.get(level, level)
        resp = self.call(
            "POST", "/v1/revoke", json={"level": wire, "target": target}, headers=self.admin()
        )
        assert resp.status_code == 200, resp.text
        why = f"{level} {target}"
        if level == "token":
            self.end_with_descendants(tok, why, whole_grant=False)
        elif level == "chain-jti":
            self.ended_below.add(tok.jti)
            self.mark_below()
        for t in self.tokens:
            delegators = t.chain
            holders = [a.agent_id for a in self.agents_of(t)]
            if (
                (level == "agent" and target in holders)
                or (level == "chain-agent" and target in delegators)
                or (level == "task" and any(a.task == target for a in self.agents_of(t)))
            ):
                t.ended = t.ended or why

    @rule(seconds=st.sampled_from([1, 5, 30, 120, 301]))
    def advance(self, seconds: int) -> None:
        self.clock.advance(seconds)

    # --- invariants ---------------------------------------------------------------------

    @invariant()
    def accepted_tokens_hold_no_more_than_the_model_allows(self) -> None:
        admin = self.admin()
        by_id = {a.agent_id: a for a in self.agents}
        for tok in self.tokens:
            claims = self.claims_of(tok.token, tok.aud)
            if tok.aud is not None:  # and for no other resource, nor the default audience
                assert self.claims_of(tok.token) is None, "a narrowed token took the default"
                other = next(
                    r
                    for r in ("https://rs1.example/api", "https://rs2.example/api")
                    if r != tok.aud
                )
                assert self.claims_of(tok.token, other) is None, "a narrowed token widened"
            form = {"token": tok.token}
            if tok.aud is not None:
                form["audience"] = tok.aud
            resp = self.call("POST", "/v1/introspect", data=form, headers=admin)
            assert resp.status_code == 200, resp.text
            active = resp.json()["active"]
            assert active == (claims is not None), (tok.jti, active, claims)
            if claims is None:
                continue
            assert not tok.ended, f"accepted a token the model holds ended: {tok.ended}"
            assert self.now < tok.exp, "accepted an expired token"
            scope = tuple(claims["scope"])
            assert set(resp.json()["scope"].split()) == set(scope)
            assert scope == tok.scope
            assert is_subset(scope, tok.root.scope)
            for ancestor in tok.lineage():
                assert is_subset(scope, ancestor.scope), (scope, ancestor.scope)
            assert claims["principal"] == tok.root.principal, (claims, tok.root.principal)
            assert claims["sub"] in (tok.holder.agent_id, tok.root.agent_id), claims
            hops = [r["agent"] for r in claims.get("delegation_chain") or []]
            assert tuple(hops) == tok.chain, (hops, tok.chain)
            for hop in hops:
                assert hop in by_id

    def teardown(self) -> None:
        try:
            self.client.__exit__(None, None, None)
        finally:
            self.broker.audit.close()
            self.broker.store.close()
            shutil.rmtree(self.directory, ignore_errors=True)


HttpAuthorityMachine.TestCase.settings = settings(
    max_examples=EXAMPLES or 12,
    stateful_step_count=STEPS or 20,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
TestHttpAuthorityModel = HttpAuthorityMachine.TestCase
