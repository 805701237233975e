"""A model-based test of the authority kernel: no sequence of operations leaks authority.

Hypothesis drives random sequences of every credential operation — apps created and
removed, launch tokens (single and multi-use with counted uses, ``max_ttl``, principal,
resumption switched off), register, renew, resume, delegate (to anyone, itself and its
ancestors included), release, heartbeat "done", revocation at all four levels and by RFC
7009, pruning, and the clock moving past expiries — against the real broker (in-memory
store and SQLite) and against a small model of who may hold what, written independently
of the broker's lineage claims: the model keeps explicit parent pointers and the history
of every end.

After every step: a token is valid at the broker exactly when the model says it is; an
issuance the model forbids never happens; nothing grows along a lineage (scope, lifetime
ceilings, renewal budget), the principal reaches every descendant; every refusal has a
``denial_id`` that leads to exactly one audit event. After every run: the audit chain
verifies.

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
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    consumes,
    initialize,
    invariant,
    precondition,
    rule,
)
from nacl.signing import SigningKey
from tests.core.conftest import REGISTER_URL, Kit

from tasklease.core.auditformat import verify_chain
from tasklease.core.broker import Broker, IssuedToken, RequestContext
from tasklease.core.clock import ManualClock
from tasklease.core.config import Config
from tasklease.core.errors import InvalidRequest, TaskleaseError
from tasklease.core.keys import KeyRing
from tasklease.core.liveness import heartbeat_signing_input
from tasklease.core.store import AuditQuery
from tasklease.core.tokens import APP_SCOPES, KIND_APP, Claims, mint
from tasklease.core.validation import TokenRejected
from tasklease.rules.binding import Presentation
from tasklease.rules.scopes import is_subset
from tasklease.storage import open_store

CTX = RequestContext(request_id="req-model", remote="127.0.0.1", path="/v1/model")
START = 1_800_000_000.0
TASKS = ("task-1", "task-2", "task-3")
CEILING = ("read:data:*", "write:data:1")
SCOPES = st.sampled_from(
    [
        ["read:data:*"],
        ["read:data:1"],
        ["read:data:2"],
        ["write:data:1"],
        ["read:data:1", "write:data:1"],
        ["read:data:*", "write:data:1"],
        ["write:data:*"],  # wider than every ceiling here
        ["admin:revoke:*"],
    ]
)
MAX_RENEWALS = 3
RENEWAL_CEILING = 900
MAX_TTL = 600
MAX_TOKENS = 48  # keeps the per-step validity check cheap
# Agent, task and chain-on-agent entries are dated clock_skew past the revoking clock's
# second (decision 142): they end what any clock within the skew made before them, and
# what is made for their target within the skew after them is refused.
SKEW = Config().clock_skew

EXAMPLES = int(os.environ.get("TASKLEASE_MODEL_EXAMPLES", "0"))
STEPS = int(os.environ.get("TASKLEASE_MODEL_STEPS", "0"))


def b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


# --- the model ------------------------------------------------------------------------


@dataclass
class MApp:
    app_id: str
    alive: bool = True


@dataclass
class MLaunch:
    token: str
    app_id: str
    scope: tuple[str, ...]
    max_ttl: int
    uses_left: int
    expires_at: float
    principal: str
    allow_resume: bool


@dataclass
class MAgent:
    agent_id: str
    key: SigningKey
    app_id: str
    task: str
    scope: tuple[str, ...]
    registered_at: int
    token_ttl: int
    principal: str
    allow_resume: bool
    revoked_at: int | None = None  # agent-level revocation
    done: bool = False
    renewals: int = 0  # the registration's own budget spent (renewals and resumes)


@dataclass
class MToken:
    issued: IssuedToken
    holder: MAgent
    root: MAgent  # whose registration the lineage starts at
    parent: MToken | None  # the token it was delegated from (renewals keep it)
    grant: str
    chain: tuple[str, ...]  # the delegators, oldest first
    ceiling: int  # the latest exp the lineage allows
    ttl_cap: int  # the longest lifetime one token of it may have
    own: bool  # an agent's own (not delegated) token
    hop_times: tuple[int, ...] = ()  # when each delegator of ``chain`` delegated
    ended: bool = False
    children: list[MToken] = field(default_factory=list)

    @property
    def claims(self) -> Claims:
        return self.issued.claims

    @property
    def jti(self) -> str:
        return self.issued.claims.jti

    @property
    def iat(self) -> int:
        return self.issued.claims.iat


class Model:
    """Who may hold what: the broker's promises, kept in the plainest form."""

    def __init__(self) -> None:
        self.apps: dict[str, MApp] = {}
        self.launches: list[MLaunch] = []
        self.agents: list[MAgent] = []
        self.tokens: list[MToken] = []
        self.ended_jtis: set[str] = set()  # tokens whose descendants ended
        self.ended_grants: set[str] = set()  # renewal threads whose descendants ended
        self.task_revoked: dict[str, int] = {}
        self.chain_agent_revoked: dict[str, int] = {}

    def app_alive(self, app_id: str) -> bool:
        return not app_id or self.apps[app_id].alive

    def agent_alive(self, agent: MAgent, now: float) -> bool:
        """In good standing: may resume and receive delegations."""
        return now < agent.registered_at + RENEWAL_CEILING and self.in_standing(agent)

    def in_standing(self, agent: MAgent) -> bool:
        """Good standing but for its registration's lifetime (which a token's own ceiling
        bounds): may renew and hand on a token it holds."""
        revoked = self.task_revoked.get(agent.task)
        return (
            agent.revoked_at is None
            and not agent.done
            and self.app_alive(agent.app_id)
            and not (revoked is not None and agent.registered_at <= revoked)
        )

    def apps_alive(self, tok: MToken) -> bool:
        """The app of every agent the token passed through, and of its holder: a token
        handed to an agent ends with that agent's app, as its own tokens do."""
        holders = (tok.root, *(self.agent(a) for a in tok.chain), tok.holder)
        return all(self.app_alive(agent.app_id) for agent in holders)

    def valid(self, tok: MToken, now: float) -> bool:
        if tok.ended or now >= tok.claims.exp:
            return False
        if not self.apps_alive(tok):
            return False
        iat = tok.iat
        revoked = self.task_revoked.get(tok.root.task)
        if revoked is not None and iat <= revoked:
            return False
        if tok.holder.revoked_at is not None and iat <= tok.holder.revoked_at:
            return False
        # The holder's task and each delegator's, for what was made before its end: a
        # token the holder held by then, a hop delegated by then (decision 134).
        revoked = self.task_revoked.get(tok.holder.task)
        if revoked is not None and iat <= revoked:
            return False
        for agent_id, when in zip(tok.chain, tok.hop_times, strict=True):
            revoked = self.task_revoked.get(self.agent(agent_id).task)
            if revoked is not None and when <= revoked:
                return False
        for agent_id in tok.chain:
            agent = self.agent(agent_id)
            if agent.revoked_at is not None and iat <= agent.revoked_at:
                return False
            hit = self.chain_agent_revoked.get(agent_id)
            if hit is not None and iat <= hit:
                return False
        return tok.parent is None or not self.ends_descendants(tok.parent)

    def ends_descendants(self, tok: MToken) -> bool:
        """Whether a token delegated from ``tok`` would be dead at birth."""
        if not self.apps_alive(tok):
            return True
        node: MToken | None = tok
        while node is not None:
            if (
                node.jti in self.ended_jtis
                or node.grant in self.ended_grants
                or node.grant in self.ended_jtis
            ):
                return True
            node = node.parent
        return False

    def agent(self, agent_id: str) -> MAgent:
        return next(a for a in self.agents if a.agent_id == agent_id)

    def end(self, tok: MToken, *, descendants: bool, whole_grant: bool) -> None:
        tok.ended = True
        if descendants:
            self.ended_jtis.add(tok.jti)
        if whole_grant:
            self.ended_grants.add(tok.grant)


# --- the machine ----------------------------------------------------------------------


class AuthorityMachine(RuleBasedStateMachine):
    store_kind = "memory"

    def __init__(self) -> None:
        super().__init__()
        self.clock = ManualClock(START)
        self.directory = tempfile.mkdtemp(prefix="tasklease-model-")
        url = (
            "memory://"
            if self.store_kind == "memory"
            else os.path.join(self.directory, "broker.db")
        )
        self.broker = Broker(
            Config(
                max_renewals=MAX_RENEWALS,
                renewal_ceiling=RENEWAL_CEILING,
                max_ttl=MAX_TTL,
                default_ttl=120,
                delegation_default_ttl=90,
                max_delegation_depth=3,
                launch_token_ttl=300,
            ),
            open_store(url),
            KeyRing.generate(),
            clock=self.clock,
            nonce_secret=b"m" * 32,
        )
        self.admin = self.broker.kernel  # noqa: F841 - the kernel under test
        self.model = Model()
        self.admin_claims = self._admin_claims()

    launches = Bundle("launches")
    agents = Bundle("agents")
    tokens = Bundle("tokens")

    # --- helpers ------------------------------------------------------------------------

    @property
    def now(self) -> float:
        return self.clock.now()

    def _admin_claims(self) -> Claims:
        from tasklease.core.tokens import ADMIN_SCOPES, KIND_ADMIN

        cfg = self.broker.config
        _, claims = mint(
            self.broker.keyring,
            kind=KIND_ADMIN,
            iss=cfg.issuer,
            sub="admin",
            aud=cfg.audience,
            iat=int(self.now),
            ttl=cfg.max_ttl,
            scope=ADMIN_SCOPES,
            client_id="admin",
        )
        return claims

    def refused(self, exc: TaskleaseError) -> None:
        """Every refusal but a malformed request is audited once, under its denial id."""
        if isinstance(exc, InvalidRequest):
            return
        assert exc.denial_id, f"refusal without a denial id: {exc!r}"
        events, _ = self.broker.store.query_audit(
            AuditQuery(limit=5, outcome="denied", since=self.now - 1)
        )
        hits = [e for e in events if e.detail.endswith(f"denial={exc.denial_id}")]
        if not hits:  # older events: search everything
            every, _ = self.broker.store.query_audit(AuditQuery(limit=100_000))
            hits = [e for e in every if e.detail.endswith(f"denial={exc.denial_id}")]
        assert len(hits) == 1, (exc, hits)

    # Whether agents register bound to their key (RFC 9449: a DPoP proof by it), and so
    # present their tokens with a proof.
    bound = False

    def registration_ctx(self, key: SigningKey) -> RequestContext:
        if not self.bound:
            return CTX
        return Kit.dpop_ctx(key, self.now, "POST", REGISTER_URL)

    def presented(self, tok: MToken) -> Presentation | None:
        """How a resource server saw ``tok`` presented: with its holder's proof when bound."""
        if not self.bound:
            return None
        url = "https://rs.example/model"
        ctx = Kit.dpop_ctx(tok.holder.key, self.now, "GET", url, tok.issued.token)
        return Presentation(scheme="DPoP", dpop_proof=ctx.dpop, htm="GET", htu=url)

    def authenticate(self, tok: MToken) -> Claims | None:
        """As the HTTP layer does: the token is checked before any operation (with a
        proof by its holder's key when agents are bound)."""
        try:
            if self.bound:
                url = "https://broker.example/v1/model"
                ctx = Kit.dpop_ctx(tok.holder.key, self.now, "POST", url, tok.issued.token)
                return self.broker.authenticate(f"DPoP {tok.issued.token}", ctx)
            return self.broker.authenticate(f"Bearer {tok.issued.token}", CTX)
        except TaskleaseError as exc:
            assert not self.model.valid(tok, self.now), "a valid token was refused"
            self.refused(exc)
            return None

    def track(self, tok: MToken) -> MToken:
        self.model.tokens.append(tok)
        if tok.parent is not None:
            tok.parent.children.append(tok)
        return tok

    def check_issued(self, new: MToken, parent_scope: tuple[str, ...]) -> None:
        """What every issuance must satisfy, whatever path made it."""
        c = new.claims
        assert is_subset(c.scope, parent_scope), (c.scope, parent_scope)
        assert c.exp <= new.ceiling, (c.exp, new.ceiling)
        assert c.exp - c.iat <= new.ttl_cap, (c.exp - c.iat, new.ttl_cap)
        assert c.exp <= new.root.registered_at + RENEWAL_CEILING
        assert c.rnc <= MAX_RENEWALS
        assert c.principal == new.root.principal
        assert c.sub == new.holder.agent_id
        assert new.holder.agent_id not in new.chain
        assert len(set(new.chain)) == len(new.chain)

    # --- apps and launch tokens ---------------------------------------------------------

    @initialize()
    def setup(self) -> None:
        self.model.apps[""] = MApp("", True)

    @rule(create=st.booleans(), index=st.integers(0, 2))
    def change_apps(self, create: bool, index: int) -> None:
        if create and len(self.model.apps) < 3:
            self.create_app()
        else:
            self.remove_app(index)

    def create_app(self) -> None:
        app, _ = self.broker.register_app(
            self.admin_claims,
            name=f"app-{secrets.token_hex(3)}",
            scopes=list(CEILING),
            token_ttl=None,
            ctx=CTX,
        )
        self.model.apps[app.app_id] = MApp(app.app_id)

    def remove_app(self, index: int) -> None:
        live = [a for a in self.model.apps.values() if a.app_id and a.alive]
        if not live:
            return
        app = live[index % len(live)]
        self.broker.deregister_app(self.admin_claims, app.app_id, CTX)
        app.alive = False

    @rule(
        target=launches,
        by_app=st.integers(0, 3),
        scope=SCOPES,
        max_ttl=st.sampled_from([None, 30, 120, 600]),
        single_use=st.booleans(),
        principal=st.sampled_from([None, "user:alice@example.com", "user:bob@example.com"]),
        max_uses=st.sampled_from([None, 1, 2, 3]),
        allow_resume=st.sampled_from([None, True, False]),
    )
    def create_launch_token(
        self,
        by_app: int,
        scope: list[str],
        max_ttl: int | None,
        single_use: bool,
        principal: str | None,
        max_uses: int | None = None,
        allow_resume: bool | None = None,
    ) -> Any:
        apps = [a for a in self.model.apps.values() if a.app_id and a.alive]
        app_id = apps[by_app % len(apps)].app_id if apps and by_app else ""
        creator = self.admin_claims
        if app_id:
            _, creator = mint(
                self.broker.keyring,
                kind=KIND_APP,
                iss=self.broker.config.issuer,
                sub=f"app:{app_id}",
                aud=self.broker.config.audience,
                iat=int(self.now),
                ttl=60,
                scope=APP_SCOPES,
                client_id=self.broker.store.get_app(app_id).client_id,  # type: ignore[union-attr]
            )
        try:
            token, record = self.broker.create_launch_token(
                creator,
                agent_name="model",
                allowed_scope=scope,
                max_ttl=max_ttl,
                single_use=single_use,
                ttl=300,
                ctx=CTX,
                principal=principal,
                max_uses=max_uses,
                allow_resume=allow_resume,
            )
        except InvalidRequest as exc:
            # Input is refused before anything else: only more than one use of a
            # single-use launch token is malformed here.
            assert single_use and (max_uses or 1) > 1, exc
            return None
        except TaskleaseError as exc:
            assert app_id and not is_subset(scope, CEILING), exc
            self.refused(exc)
            return None
        uses = 1 if single_use else max_uses or 10
        assert (record.max_uses, record.uses_left) == (uses, uses)
        return MLaunch(
            token,
            app_id,
            tuple(scope),
            record.max_ttl,
            uses,
            record.expires_at,
            record.principal,
            allow_resume is not False,
        )

    # --- agents -------------------------------------------------------------------------

    @rule(target=agents, launch=launches, scope=SCOPES, task=st.sampled_from(TASKS))
    def register(self, launch: MLaunch | None, scope: list[str], task: str) -> Any:
        if launch is None:
            return None
        key = SigningKey.generate()
        nonce, _ = self.broker.challenge()
        may = (
            self.now < launch.expires_at
            and launch.uses_left > 0
            and self.model.app_alive(launch.app_id)
            and is_subset(scope, launch.scope)
            and self.model.task_revoked.get(task, -1) < int(self.now)
        )
        try:
            issued = self.broker.register(
                launch_token=launch.token,
                nonce=nonce,
                public_key=b64(bytes(key.verify_key)),
                signature=b64(key.sign(bytes.fromhex(nonce)).signature),
                orch_id="orch-m",
                task_id=task,
                requested_scope=scope,
                ctx=self.registration_ctx(key),
            )
        except TaskleaseError as exc:
            assert not may, f"registration refused: {exc!r}"
            self.refused(exc)
            return None
        assert may, "registration granted that the model forbids"
        launch.uses_left -= 1
        agent = MAgent(
            issued.claims.sub,
            key,
            launch.app_id,
            task,
            tuple(scope),
            issued.claims.iat,
            launch.max_ttl,
            launch.principal,
            launch.allow_resume,
        )
        self.model.agents.append(agent)
        tok = MToken(
            issued,
            agent,
            agent,
            None,
            issued.claims.jti,
            (),
            agent.registered_at + RENEWAL_CEILING,
            launch.max_ttl,
            own=True,
        )
        self.check_issued(tok, launch.scope)
        self.track(tok)
        return agent

    @rule(
        target=agents,
        by_app=st.integers(0, 3),
        scope=st.sampled_from([["read:data:*"], ["read:data:1"], list(CEILING)]),
        task=st.sampled_from(TASKS),
        max_ttl=st.sampled_from([None, 30, 120]),
        principal=st.sampled_from([None, "user:alice@example.com"]),
    )
    def onboard(
        self, by_app: int, scope: list[str], task: str, max_ttl: int | None, principal: str | None
    ) -> Any:
        """A launch token and the agent it launches: the common case, taken often."""
        launch = self.create_launch_token(by_app, scope, max_ttl, False, principal)
        return self.register(launch, scope, task)

    def _tokens_room(self) -> bool:
        return len(self.model.tokens) < MAX_TOKENS

    @precondition(lambda self: self._tokens_room())
    @rule(index=st.integers(0, 10_000))
    def resume(self, index: int) -> None:
        if not self.model.agents:
            return
        agent = self.model.agents[index % len(self.model.agents)]
        nonce, _ = self.broker.challenge()
        signature = b64(agent.key.sign(bytes.fromhex(nonce)).signature)
        ceiling = agent.registered_at + RENEWAL_CEILING
        may = (
            self.model.agent_alive(agent, self.now)
            and agent.allow_resume
            and agent.renewals < MAX_RENEWALS
            and int(self.now) < ceiling
        )
        try:
            ctx = (
                Kit.dpop_ctx(agent.key, self.now, "POST", "https://broker.example/v1/resume")
                if self.bound
                else CTX
            )
            issued = self.broker.resume(
                agent_id=agent.agent_id, nonce=nonce, signature=signature, ctx=ctx
            )
        except TaskleaseError as exc:
            assert not may, f"resume refused: {exc!r}"
            self.refused(exc)
            return
        assert may, "resume granted that the model forbids"
        agent.renewals += 1
        assert issued.claims.rnc == agent.renewals
        tok = MToken(
            issued, agent, agent, None, issued.claims.jti, (), ceiling, agent.token_ttl, own=True
        )
        self.check_issued(tok, agent.scope)
        self.track(tok)

    # --- tokens -------------------------------------------------------------------------

    def pick(self, index: int, live: bool = False) -> MToken | None:
        """A token: any (dead ones too, as an attacker would), or one the model holds valid."""
        pool = self.model.tokens
        if live:
            pool = [t for t in pool if self.model.valid(t, self.now)] or pool
        return pool[index % len(pool)] if pool else None

    @precondition(lambda self: self._tokens_room() and bool(self.model.tokens))
    @rule(index=st.integers(0, 10_000), live=st.booleans())
    def renew(self, index: int, live: bool) -> None:
        tok = self.pick(index, live)
        if tok is not None:
            self.renew_token(tok)

    def renew_token(self, tok: MToken) -> MToken | None:
        claims = self.authenticate(tok)
        if claims is None:
            return None
        spent = max(tok.claims.rnc, tok.holder.renewals) if tok.own else tok.claims.rnc
        lifetime = min(tok.claims.exp - tok.claims.iat, MAX_TTL)
        may = (
            spent + 1 <= MAX_RENEWALS
            and int(self.now) < tok.ceiling
            and self.model.in_standing(tok.holder)
        )
        try:
            issued = self.broker.renew(claims, CTX)
        except TaskleaseError as exc:
            assert not may, f"renewal refused: {exc!r}"
            self.refused(exc)
            return None
        assert may, "renewal granted that the model forbids"
        assert issued.claims.rnc == spent + 1
        assert issued.claims.exp - issued.claims.iat <= lifetime
        if tok.own:
            tok.holder.renewals = spent + 1
        tok.ended = True  # superseded: only the token itself
        new = MToken(
            issued,
            tok.holder,
            tok.root,
            tok.parent,
            tok.grant,
            tok.chain,
            tok.ceiling,
            tok.ttl_cap,
            own=tok.own,
            hop_times=tok.hop_times,
        )
        self.check_issued(new, tok.claims.scope)
        return self.track(new)

    @precondition(lambda self: self._tokens_room() and bool(self.model.tokens))
    @rule(
        index=st.integers(0, 10_000),
        to=st.integers(0, 10_000),
        scope=SCOPES,
        narrow=st.booleans(),
        fresh=st.booleans(),
    )
    def delegate(self, index: int, to: int, scope: list[str], narrow: bool, fresh: bool) -> None:
        tok = self.pick(index, live=fresh)
        if tok is None:
            return
        in_chain = [tok.holder, *(self.model.agent(a) for a in tok.chain)]
        outside = [
            a
            for a in self.model.agents
            if self.model.agent_alive(a, self.now) and a not in in_chain
        ]
        # Mostly hand on to a live agent outside the chain; else to anyone, itself and
        # its ancestors included.
        pool = outside if fresh and outside else [*self.model.agents]
        if not fresh and to % 3 == 0:
            pool = in_chain
        target_agent = pool[to % len(pool)]
        if narrow:  # mostly ask for what the delegator holds, or a part of it
            scope = list(tok.claims.scope[: 1 + index % len(tok.claims.scope)])
        claims = self.authenticate(tok)
        if claims is None:
            return
        chain = (*tok.chain, tok.holder.agent_id)
        ceiling = min(tok.ceiling, tok.claims.exp)
        # A delegation whose lineage already ended would be born dead: never issued.
        ended = self.model.ends_descendants(tok)
        may = (
            not ended
            and self.model.in_standing(tok.holder)
            and self.model.agent_alive(target_agent, self.now)
            and target_agent.agent_id not in chain
            and len(chain) <= 3
            and is_subset(scope, tok.claims.scope)
            and int(self.now) < ceiling
            and self.model.chain_agent_revoked.get(tok.holder.agent_id, -1) < int(self.now)
        )
        try:
            issued = self.broker.delegate(
                claims, delegate_to=target_agent.agent_id, scope=scope, ttl=None, ctx=CTX
            )
        except TaskleaseError as exc:
            assert not may, f"delegation refused: {exc!r}"
            self.refused(exc)
            return
        assert may, "delegation granted that the model forbids"
        assert issued.claims.rnc == tok.claims.rnc  # the budget spent is handed on
        new = MToken(
            issued,
            target_agent,
            tok.root,
            tok,
            issued.claims.jti,
            chain,
            ceiling,
            tok.ttl_cap,
            own=False,
            hop_times=(*tok.hop_times, issued.claims.iat),
        )
        self.check_issued(new, tok.claims.scope)
        assert issued.claims.exp <= tok.claims.exp
        self.track(new)

    def release(self, tok: MToken) -> None:
        claims = self.authenticate(tok)
        if claims is None:
            return
        self.broker.release(claims, CTX)
        self.model.end(tok, descendants=True, whole_grant=True)

    def heartbeat_done(self, tok: MToken) -> None:
        claims = self.authenticate(tok)
        if claims is None:
            return
        now = int(self.now)
        proof = secrets.token_hex(8)
        message = heartbeat_signing_input(claims.sub, claims.jti, now, proof, True)
        may = not tok.holder.done
        try:
            self.broker.heartbeat(
                claims,
                timestamp=now,
                jti=proof,
                signature=b64(tok.holder.key.sign(message).signature),
                done=True,
                ctx=CTX,
            )
        except TaskleaseError as exc:
            assert not may, f"heartbeat refused: {exc!r}"
            self.refused(exc)
            return
        tok.holder.done = True
        self.model.end(tok, descendants=True, whole_grant=True)

    def rfc7009(self, tok: MToken) -> None:
        """RFC 7009: the holder revokes its own token."""
        claims = self.authenticate(tok)
        if claims is None:
            return
        assert self.broker.revoke_token(
            claims, token=tok.issued.token, token_type_hint=None, ctx=CTX
        )
        self.model.end(tok, descendants=True, whole_grant=True)

    # --- operators' revocations ---------------------------------------------------------

    @precondition(lambda self: bool(self.model.tokens))
    @rule(
        how=st.sampled_from(["release", "done", "rfc7009"]),
        index=st.integers(0, 10_000),
        live=st.booleans(),
        renewed=st.booleans(),
    )
    def end_token(self, how: str, index: int, live: bool, renewed: bool) -> None:
        tok = self.pick(index, live)
        if renewed:
            # A delegator renewed after it delegated, then ended: its delegations must
            # end with it (they descend from its grant, not from the renewed token).
            parents = [
                t
                for t in self.model.tokens
                if self.model.valid(t, self.now)
                and any(self.model.valid(c, self.now) for c in t.children)
            ]
            tok = self.renew_token(parents[index % len(parents)]) if parents else tok
        if tok is None:
            return
        {"release": self.release, "done": self.heartbeat_done, "rfc7009": self.rfc7009}[how](tok)

    @precondition(lambda self: bool(self.model.tokens))
    @rule(
        level=st.sampled_from(["token", "chain-jti", "agent", "chain-agent", "task"]),
        index=st.integers(0, 10_000),
        live=st.booleans(),
    )
    def revoke(self, level: str, index: int, live: bool) -> None:
        tok = self.pick(index, live)
        if tok is None:
            return
        if level in ("token", "chain-jti"):
            self.revoke_token_jti(tok, chain_level=level == "chain-jti")
        elif level == "task":
            self.revoke_task(tok.root.task)
        else:
            agents = [tok.holder, *(self.model.agent(a) for a in tok.chain)]
            self.revoke_agent(agents[index % len(agents)], chain_level=level == "chain-agent")

    def _revoke(self, level: str, target: str) -> None:
        self.broker.revoke(self.admin_claims, level=level, target=target, ctx=CTX)

    def revoke_token_jti(self, tok: MToken, *, chain_level: bool) -> None:
        self._revoke("chain" if chain_level else "token", tok.jti)
        self.model.ended_jtis.add(tok.jti)
        if not chain_level:
            tok.ended = True

    def revoke_agent(self, agent: MAgent, *, chain_level: bool) -> None:
        now = int(self.now) + SKEW
        if chain_level:
            self._revoke("chain", agent.agent_id)
            self.model.chain_agent_revoked[agent.agent_id] = now
        else:
            self._revoke("agent", agent.agent_id)
            agent.revoked_at = now

    def revoke_task(self, task: str) -> None:
        self._revoke("task", task)
        self.model.task_revoked[task] = int(self.now) + SKEW

    # --- time ---------------------------------------------------------------------------

    @rule(seconds=st.sampled_from([1, 1, 5, 5, 29, 30, 31, 60, 89, 90, 119, 120, 300, 601]))
    def advance(self, seconds: int) -> None:
        self.clock.advance(seconds)
        self.admin_claims = self._admin_claims()

    @precondition(lambda self: bool(self.model.tokens))
    @rule()
    def prune(self) -> None:
        self.broker.prune()

    # --- invariants ---------------------------------------------------------------------

    @invariant()
    def broker_and_model_agree_on_every_token(self) -> None:
        now = self.now
        for tok in self.model.tokens:
            try:
                self.broker.validate(tok.issued.token, presented=self.presented(tok))
                broker_valid = True
            except TokenRejected:
                broker_valid = False
            model_valid = self.model.valid(tok, now)
            assert broker_valid == model_valid, (
                f"broker says {broker_valid}, model says {model_valid} for "
                f"{tok.claims.sub} jti={tok.jti} iat={tok.iat} exp={tok.claims.exp} "
                f"now={now} chain={tok.chain}"
            )

    def teardown(self) -> None:
        try:
            report = verify_chain(self.broker.store.iter_audit())
            assert report.ok, report
        finally:
            self.broker.audit.close()
            self.broker.store.close()
            shutil.rmtree(self.directory, ignore_errors=True)


class SQLiteAuthorityMachine(AuthorityMachine):
    store_kind = "sqlite"


_common = {
    "deadline": None,
    "suppress_health_check": [HealthCheck.too_slow, HealthCheck.filter_too_much],
}
# make test: 40 x 40 + 12 x 40 = 2,080 steps at least; make soak scales both up.
AuthorityMachine.TestCase.settings = settings(
    max_examples=EXAMPLES or 40, stateful_step_count=STEPS or 40, **_common
)
SQLiteAuthorityMachine.TestCase.settings = settings(
    max_examples=EXAMPLES or 12, stateful_step_count=STEPS or 40, **_common
)
TestAuthorityModelMemory = AuthorityMachine.TestCase
TestAuthorityModelSQLite = SQLiteAuthorityMachine.TestCase

__all__ = ["TestAuthorityModelMemory", "TestAuthorityModelSQLite", "consumes"]
