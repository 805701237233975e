"""A model-based test of structured grants through the broker: no sequence of
registrations, delegations, narrowings (RFC 8693) and renewals widens any grant.

Hypothesis drives random sequences against a real broker (memory store): each step asks
for grants near those the parent holds (narrower, or one step wider in one limit, member
or value), or for unrelated ones. After every step: the broker issued exactly when the
rules say the request is covered by its parent (``rules.grants.uncovered``), and nothing
any token allows (calls built at the edges of its grants) is beyond what the root launch
token allowed.
"""

from __future__ import annotations

import base64
from decimal import Decimal
from typing import Any

import hypothesis.strategies as st
from hypothesis import HealthCheck, settings
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule
from nacl.signing import SigningKey

from tasklease.core.broker import Broker, RequestContext
from tasklease.core.clock import ManualClock
from tasklease.core.config import Config
from tasklease.core.errors import ScopeViolation, TaskleaseError
from tasklease.core.exchange import ACCESS_TOKEN_TYPE, GRANT_TYPE, ExchangeRequest
from tasklease.core.keys import KeyRing
from tasklease.core.tokens import ADMIN_SCOPES, KIND_ADMIN, mint
from tasklease.rules import grants as g
from tasklease.rules import grantuse as gu
from tasklease.storage import open_store

CTX = RequestContext(request_id="req-grants-model", remote="127.0.0.1", path="/v1/model")
START = 1_800_000_000
PAYEES = ["P", "Q", "R"]
LOCATIONS = ["https://pay.example/p", "https://pay.example/p/P", "https://pay.example/p/Q"]


@st.composite
def grant(draw: st.DrawFn) -> dict[str, Any]:
    kind = draw(st.sampled_from(["scope", "resource_access"]))
    out: dict[str, Any] = {"type": kind}
    if kind == "scope":
        out["scope"] = draw(st.sampled_from(["pay:x:*", "pay:x:1", "read:x:*"]))
    else:
        out["actions"] = draw(
            st.lists(st.sampled_from(["pay", "refund"]), min_size=1, max_size=2, unique=True)
        )
        out["locations"] = draw(
            st.lists(st.sampled_from(LOCATIONS), min_size=1, max_size=2, unique=True)
        )
    limits: dict[str, Any] = {}
    if draw(st.booleans()):
        limits.update(max_amount=str(draw(st.integers(1, 500))), currency="EUR")
    if draw(st.booleans()):
        limits["allowed_values"] = {
            "payee": draw(st.lists(st.sampled_from(PAYEES), min_size=1, max_size=3, unique=True))
        }
    if draw(st.booleans()):
        limits.update(
            not_before=START - draw(st.integers(0, 100)),
            not_after=START + draw(st.integers(1, 3600)),
        )
    if draw(st.booleans()):
        limits["max_calls"] = draw(st.integers(1, 9))
    if limits:
        out["limits"] = limits
    return g.parse_detail(out)


@st.composite
def near(draw: st.DrawFn, parent: dict[str, Any]) -> dict[str, Any]:
    """``parent`` changed in one place: narrower, equal, or one step wider."""
    child = {k: v for k, v in parent.items()}
    limits = dict(parent.get("limits", {}))
    step = draw(
        st.sampled_from(
            ["same", "amount", "calls", "window", "payee", "action", "location", "scope", "drop"]
        )
    )
    if step == "amount" and "max_amount" in limits:
        limits["max_amount"] = str(Decimal(limits["max_amount"]) + draw(st.integers(-1, 1)))
        if Decimal(limits["max_amount"]) < 0:
            limits["max_amount"] = "0"
    elif step == "calls" and "max_calls" in limits:
        limits["max_calls"] = max(1, limits["max_calls"] + draw(st.integers(-1, 1)))
    elif step == "window" and "not_after" in limits:
        limits["not_after"] += draw(st.integers(-10, 10))
        limits["not_after"] = max(limits["not_after"], limits.get("not_before", 0) + 1)
    elif step == "payee":
        limits["allowed_values"] = {
            "payee": draw(st.lists(st.sampled_from(PAYEES), min_size=1, max_size=3, unique=True))
        }
    elif step == "action" and "actions" in child:
        child["actions"] = draw(
            st.lists(st.sampled_from(["pay", "refund"]), min_size=1, max_size=2, unique=True)
        )
    elif step == "location" and "locations" in child:
        child["locations"] = [draw(st.sampled_from(LOCATIONS))]
    elif step == "scope" and child["type"] == "scope":
        child["scope"] = draw(st.sampled_from(["pay:x:*", "pay:x:1", "pay:x:2", "read:x:*"]))
    elif step == "drop" and limits:
        limits.pop(draw(st.sampled_from(sorted(limits))))
        if ("max_amount" in limits) != ("currency" in limits):
            limits.pop("max_amount", None)
            limits.pop("currency", None)
    child.pop("limits", None)
    if limits:
        child["limits"] = limits
    return g.parse_detail(child)


def calls_at_the_edges(grants: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    """Calls each grant allows, at the edges of its limits."""
    out = []
    for grant in grants:
        limits = grant.get("limits", {})
        call: dict[str, Any] = {"now": limits.get("not_after", START + 10) - 1}
        if grant["type"] == "scope":
            call["scope"] = grant["scope"].replace("*", "7")
        else:
            call["action"] = grant["actions"][0]
            call["location"] = grant["locations"][-1]
        if "max_amount" in limits:
            call.update(amount=limits["max_amount"], currency="EUR")
        if "allowed_values" in limits:
            call["values"] = {"payee": limits["allowed_values"]["payee"][-1]}
        out.append((str(grant["type"]), call))
    return out


class Grants(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.clock = ManualClock(float(START))
        self.broker = Broker(
            Config(max_delegation_depth=16),
            open_store("memory://"),
            KeyRing.generate(),
            clock=self.clock,
            nonce_secret=b"g" * 32,
        )
        _, self.admin = mint(
            self.broker.keyring, kind=KIND_ADMIN, iss="tasklease", sub="admin",
            aud=("tasklease",), iat=START, ttl=3000, scope=ADMIN_SCOPES, client_id="admin",
        )  # fmt: skip
        self.root: list[dict[str, Any]] = []
        self.launch = ""
        self.tokens: list[Any] = []  # (IssuedToken, parent grants)
        self.agents: list[str] = []
        self.count = 0

    @initialize(root=st.lists(grant(), min_size=1, max_size=3))
    def launch_token(self, root: list[dict[str, Any]]) -> None:
        self.root = list(g.parse_details(root))
        self.launch, _ = self.broker.create_launch_token(
            self.admin, agent_name="model", allowed_scope=[], max_ttl=None, single_use=False,
            ttl=3000, ctx=CTX, max_uses=1000, authorization_details=self.root,
        )  # fmt: skip

    def _asked(self, data: st.DataObject, held: list[dict[str, Any]]) -> list[dict[str, Any]]:
        asked = [
            data.draw(near(data.draw(st.sampled_from(held))) | grant())
            for _ in range(data.draw(st.integers(1, 2)))
        ]
        return list(g.parse_details(asked))

    def _expect(self, asked: list[dict[str, Any]], held: list[dict[str, Any]], issue: Any) -> Any:
        covered = not g.uncovered(asked, held)
        try:
            issued = issue()
        except ScopeViolation:
            assert not covered, f"refused a covered request {asked} under {held}"
            return None
        assert covered, f"issued {asked} beyond {held}"
        assert list(issued.claims.details) == asked
        self.tokens.append((issued, held))
        return issued

    @rule(data=st.data())
    def register(self, data: st.DataObject) -> None:
        if len(self.tokens) > 24:
            return
        asked = self._asked(data, self.root)
        key = SigningKey.generate()
        nonce, _ = self.broker.challenge()
        self.count += 1
        args = {
            "launch_token": self.launch, "nonce": nonce,
            "public_key": base64.b64encode(bytes(key.verify_key)).decode(),
            "signature": base64.b64encode(key.sign(bytes.fromhex(nonce)).signature).decode(),
            "orch_id": "model", "task_id": f"t{self.count}", "requested_scope": None,
            "ctx": CTX, "authorization_details": asked,
        }  # fmt: skip
        issued = self._expect(asked, self.root, lambda: self.broker.register(**args))
        if issued is not None:
            self.agents.append(issued.claims.sub)

    @rule(data=st.data())
    def delegate(self, data: st.DataObject) -> None:
        if not self.tokens or len(self.agents) < 2 or len(self.tokens) > 24:
            return
        parent, _ = data.draw(st.sampled_from(self.tokens))
        chain = {r.agent for r in parent.claims.delegation_chain} | {parent.claims.sub}
        targets = [a for a in self.agents if a not in chain]
        if not targets:
            return
        held = list(parent.claims.details)
        asked = self._asked(data, held)
        to = data.draw(st.sampled_from(targets))
        self._expect(
            asked,
            held,
            lambda: self.broker.delegate(
                parent.claims,
                delegate_to=to,
                scope=None,
                ttl=None,
                ctx=CTX,
                authorization_details=asked,
            ),
        )

    @rule(data=st.data())
    def narrow(self, data: st.DataObject) -> None:
        if not self.tokens or len(self.tokens) > 24:
            return
        parent, _ = data.draw(st.sampled_from(self.tokens))
        held = list(parent.claims.details)
        asked = self._asked(data, held)
        request = ExchangeRequest(
            grant_type=GRANT_TYPE,
            subject_token=parent.token,
            subject_token_type=ACCESS_TOKEN_TYPE,
            authorization_details=asked,
        )
        covered = not g.uncovered(asked, held)
        try:
            done = self.broker.exchange_token(request, CTX)
        except TaskleaseError as exc:
            assert not covered and exc.code == "invalid_authorization_details", exc
            return
        assert covered and list(done.details) == asked
        self.tokens.append((done.issued, held))

    @rule(data=st.data())
    def renew(self, data: st.DataObject) -> None:
        if not self.tokens:
            return
        index = data.draw(st.integers(0, len(self.tokens) - 1))
        token, held = self.tokens[index]
        try:
            renewed = self.broker.renew(token.claims, CTX)
        except TaskleaseError:
            return  # renewed before, or a delegated token of a renewed one: refused
        assert renewed.claims.details == token.claims.details
        self.tokens[index] = (renewed, held)

    @invariant()
    def nothing_goes_beyond_the_launch_token(self) -> None:
        for token, held in self.tokens:
            mine = list(token.claims.details)
            assert not g.uncovered(mine, held)
            for kind, call in calls_at_the_edges(mine):
                assert gu.allows(mine, kind, **call) is not None
                assert gu.allows(self.root, kind, **call) is not None, (call, self.root)


TestGrants = Grants.TestCase
TestGrants.settings = settings(
    max_examples=100,
    stateful_step_count=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
