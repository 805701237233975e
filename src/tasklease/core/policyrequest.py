"""What an issuance decision is asked about, as Cedar entities and a request.

The broker builds one :class:`PolicyRequest` per issuance it decides (``core.policy``):
who asks (:class:`Actor`: an app, an operator, a launch token, an attested workload or
an agent, with the attested facts as the entity's tags and its app as its parent), what
it asks for (the requested grants, summarized as the ``Grants`` entity's attributes), and
the situation (time, tenant, the human principal, depth, a federated domain, whether the
request stays within its ceiling). The shapes are those of :data:`SCHEMA`; a request file
for ``tasklease policy test`` is :meth:`PolicyRequest.as_json`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from tasklease.core.records import AgentRecord
from tasklease.core.tokens import Claims
from tasklease.rules import grants as grant_rules
from tasklease.rules import scopes as scope_rules

__all__ = [
    "ACTIONS",
    "SCHEMA",
    "Actor",
    "PolicyRequest",
    "RequestFileError",
    "actor_from_json",
    "agent_actor",
]

ACTIONS = ("launch", "register", "delegate", "narrow", "exchange")
"""The operations a policy decides: creating a launch token, registering, delegating,
deriving a narrower token (RFC 8693 within the domain) and exchanging a federated
domain's token."""

SCHEMA = """\
// The entities and actions of tasklease's issuance decisions (docs/policy.md).
entity App;
entity Operator;
entity LaunchToken in [App] { agent_name: String, created_by: String } tags String;
entity Workload in [App] { attestor: String, type: String, subject: String } tags String;
entity Agent in [App] { task_id: String, orch_id: String, client_id: String, depth: Long }
  tags String;
entity Grants {
  scopes: Set<String>,
  scope_kinds: Set<String>,
  types: Set<String>,
  actions: Set<String>,
  locations: Set<String>,
  datatypes: Set<String>,
  currencies: Set<String>,
  values: Set<String>,
  max_amount?: decimal,
  unbounded_amount: Bool,
  unbounded_values: Bool,
  unbounded_locations: Bool,
  unbounded_datatypes: Bool,
  max_calls?: Long,
  not_after?: Long,
  ttl: Long,
};
type Situation = {
  now: Long,
  tenant: String,
  within_ceiling: Bool,
  human: String,
  depth: Long,
  domain: String,
  attested: Bool,
};
action launch appliesTo { principal: [App, Operator], resource: Grants, context: Situation };
action register appliesTo {
  principal: [LaunchToken, Workload], resource: Grants, context: Situation
};
action delegate, narrow, exchange appliesTo {
  principal: [Agent], resource: Grants, context: Situation
};
"""


class RequestFileError(ValueError):
    """A policy request (``tasklease policy test``'s file) that is not well formed."""


_PRINCIPALS = {
    "App": (),
    "Operator": (),
    "LaunchToken": ("agent_name", "created_by"),
    "Workload": ("attestor", "type", "subject"),
    "Agent": ("task_id", "orch_id", "client_id", "depth"),
}
_TAGGED = ("LaunchToken", "Workload", "Agent")
_IN_APP = ("LaunchToken", "Workload", "Agent")  # the types whose parent may be an App


@dataclass(frozen=True, slots=True)
class Actor:
    """The principal of a decision: an entity ``type`` and ``id``, its attributes (as the
    schema has them), its tags (attested facts) and its app (its parent, "" for none)."""

    type: str
    id: str
    attrs: Mapping[str, str | int] = field(default_factory=dict)
    tags: Mapping[str, str] = field(default_factory=dict)
    app: str = ""

    def entities(self) -> list[dict[str, Any]]:
        uid = {"type": self.type, "id": self.id}
        attrs: dict[str, Any] = {}
        for name in _PRINCIPALS[self.type]:
            default: str | int = 0 if name == "depth" else ""
            attrs[name] = self.attrs.get(name, default)
        entity: dict[str, Any] = {"uid": uid, "attrs": attrs, "parents": []}
        if self.type in _TAGGED:
            entity["tags"] = dict(self.tags)
        out = [entity]
        if self.app and self.type != "App":
            entity["parents"] = [{"type": "App", "id": self.app}]
            out.append({"uid": {"type": "App", "id": self.app}, "attrs": {}, "parents": []})
        return out

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"type": self.type, "id": self.id}
        if self.attrs:
            out["attrs"] = dict(self.attrs)
        if self.tags:
            out["tags"] = dict(self.tags)
        if self.app:
            out["app"] = self.app
        return out


def agent_actor(claims: Claims, holder: AgentRecord | None) -> Actor:
    """An agent asking with its token: its task, orchestrator, client and depth, the
    facts its workload attested (the ``attest`` claim) as tags, and the app it is
    registered under.

    That app is ``holder``'s, the asking agent's registration, when the caller read it.
    Without it, the token's lineage names it first only for the holder's own tokens; a
    token handed to it (a delegation, an exchange) names its delegator's app first, so
    another app's agent asking with it would be decided as that app's: such a token
    without its holder's registration is of no app ("")."""
    attest = claims.raw.get("attest")
    facts = attest.get("facts") if isinstance(attest, dict) else None
    tags = (
        {str(k): v for k, v in facts.items() if isinstance(v, str)}
        if isinstance(facts, dict)
        else {}
    )
    if holder is not None:
        app = holder.app_id
    elif claims.delegation_chain:
        app = ""
    else:
        app = next((a[4:] for a in claims.lineage if a.startswith("app:")), "")
    attrs: dict[str, str | int] = {
        "task_id": claims.task_id,
        "orch_id": claims.orch_id,
        "client_id": claims.client_id,
        "depth": claims.depth,
    }
    return Actor("Agent", claims.sub, attrs, tags, app)


def actor_from_json(raw: object) -> Actor:
    """An :class:`Actor` from a request file. Raises :class:`RequestFileError`."""
    if not isinstance(raw, dict) or raw.get("type") not in _PRINCIPALS:
        raise RequestFileError(f"principal.type must be one of {', '.join(_PRINCIPALS)}")
    ident = raw.get("id")
    if not isinstance(ident, str) or not ident:
        raise RequestFileError("principal.id must be a non-empty string")
    attrs = raw.get("attrs", {})
    tags = raw.get("tags", {})
    app = raw.get("app", "")
    if not isinstance(attrs, dict) or not all(
        isinstance(v, str | int) and not isinstance(v, bool) for v in attrs.values()
    ):
        raise RequestFileError("principal.attrs must be an object of strings and integers")
    if not isinstance(tags, dict) or not all(isinstance(v, str) for v in tags.values()):
        raise RequestFileError("principal.tags must be an object of strings")
    if not isinstance(app, str):
        raise RequestFileError("principal.app must be a string")
    return Actor(str(raw["type"]), ident, dict(attrs), {str(k): v for k, v in tags.items()}, app)


@dataclass(frozen=True, slots=True)
class PolicyRequest:
    """One issuance to decide: ``operation`` (one of :data:`ACTIONS`) by ``actor`` for
    ``scopes`` and ``details`` (``authorization_details``) of lifetime ``ttl``."""

    operation: str
    actor: Actor
    scopes: tuple[str, ...] = ()
    details: tuple[Mapping[str, Any], ...] = ()
    ttl: int = 0
    now: int = 0
    tenant: str = "default"
    within_ceiling: bool = True
    human: str = ""
    depth: int = 0
    domain: str = ""

    def cedar(self) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """The Cedar request and its entities."""
        entities = [*self.actor.entities(), _grants_entity(self)]
        request = {
            "principal": {"type": self.actor.type, "id": self.actor.id},
            "action": {"type": "Action", "id": self.operation},
            "resource": {"type": "Grants", "id": "requested"},
            "context": self.situation(),
        }
        return request, entities

    def situation(self) -> dict[str, Any]:
        """The request's context (the schema's ``Situation``)."""
        return {
            "now": self.now,
            "tenant": self.tenant,
            "within_ceiling": self.within_ceiling,
            "human": self.human,
            "depth": self.depth,
            "domain": self.domain,
            "attested": bool(self.actor.tags),
        }

    def well_typed(self) -> bool:
        """Whether every value of the request has its schema type and fits it: strings
        that are text, integers of 64 bits, a ``decimal`` within its range, the actor's
        attributes as its entity type declares them. A request that is not is left to
        the schema's check in Cedar (which refuses it: a deny)."""
        actor = self.actor
        declared = _PRINCIPALS.get(actor.type)
        if declared is None or self.operation not in ACTIONS:
            return False
        if actor.app and actor.type not in _IN_APP:
            return False
        texts = [actor.id, actor.app, self.tenant, self.human, self.domain, *self.scopes]
        texts += [*actor.tags.keys(), *actor.tags.values()]
        for name in declared:
            value = actor.attrs.get(name, 0 if name == "depth" else "")
            if name == "depth":
                if not _long(value):
                    return False
            elif isinstance(value, str):
                texts.append(value)
            else:
                return False
        if not all(isinstance(t, str) and _text(t) for t in texts):
            return False
        if type(self.within_ceiling) is not bool or not all(
            _long(v) for v in (self.ttl, self.now, self.depth)
        ):
            return False
        attrs = _grants_entity(self)["attrs"]
        for name in ("ttl", "max_calls", "not_after"):
            if name in attrs and not _long(attrs[name]):
                return False
        amount = attrs.get("max_amount")
        if amount is not None and abs(Decimal(amount["__extn"]["arg"])) > _DECIMAL_MAX:
            return False
        return all(_text(v) for vs in attrs.values() if isinstance(vs, list) for v in vs)

    def as_json(self) -> dict[str, Any]:
        """The request as ``tasklease policy test`` reads it."""
        situation = self.situation()
        del situation["attested"]  # the principal's tags say it
        return {
            "operation": self.operation,
            "principal": self.actor.as_json(),
            "scope": list(self.scopes),
            "authorization_details": [dict(d) for d in self.details],
            "ttl": self.ttl,
            **situation,
        }

    @classmethod
    def from_json(cls, raw: object) -> PolicyRequest:
        """A request file's request. Raises :class:`RequestFileError` naming what is wrong."""
        if not isinstance(raw, dict):
            raise RequestFileError("a policy request is a JSON object")
        operation = raw.get("operation")
        if operation not in ACTIONS:
            raise RequestFileError(f"operation must be one of {', '.join(ACTIONS)}")
        scopes = raw.get("scope", [])
        if not isinstance(scopes, list) or not all(
            isinstance(s, str) and scope_rules.parse_scope(s) for s in scopes
        ):
            raise RequestFileError("scope must be a list of scopes action:resource:identifier")
        try:
            details = grant_rules.parse_details(raw.get("authorization_details", []))
        except grant_rules.GrantError as exc:
            raise RequestFileError(exc.reason) from None
        ints = {n: raw.get(n, 0) for n in ("ttl", "now", "depth")}
        texts = {
            n: raw.get(n, "default" if n == "tenant" else "") for n in ("tenant", "human", "domain")
        }
        if not all(type(v) is int for v in ints.values()):
            raise RequestFileError("ttl, now and depth must be integers")
        if not all(isinstance(v, str) for v in texts.values()):
            raise RequestFileError("tenant, human and domain must be strings")
        within = raw.get("within_ceiling", True)
        if not isinstance(within, bool):
            raise RequestFileError("within_ceiling must be true or false")
        return cls(
            operation=str(operation),
            actor=actor_from_json(raw.get("principal")),
            scopes=tuple(scopes),
            details=details,
            ttl=int(ints["ttl"]),
            now=int(ints["now"]),
            tenant=str(texts["tenant"]),
            within_ceiling=within,
            human=str(texts["human"]),
            depth=int(ints["depth"]),
            domain=str(texts["domain"]),
        )


_LONG = 1 << 63
# Cedar's ``decimal``: a 64-bit integer of ten-thousandths.
_DECIMAL_MAX = Decimal(_LONG - 1) / 10_000


def _long(value: object) -> bool:
    """A Cedar ``Long``: an integer (not a boolean) of 64 bits."""
    return type(value) is int and -_LONG <= value < _LONG


def _text(value: str) -> bool:
    """A string Cedar can take: text, without lone surrogates."""
    if value.isascii():
        return True
    try:
        value.encode()
    except UnicodeEncodeError:
        return False
    return True


def _decimal(amount: Decimal) -> dict[str, Any]:
    """A Cedar ``decimal`` (at most four decimals; the grammar of rules.grants)."""
    text = format(amount.quantize(Decimal("0.0001")), "f")
    return {"__extn": {"fn": "decimal", "arg": text}}


def _grants_entity(request: PolicyRequest) -> dict[str, Any]:
    """The requested grants as the ``Grants`` entity's attributes (sets of what every
    grant names, the largest limits)."""
    scopes = set(request.scopes)
    types: set[str] = set()
    sets: dict[str, set[str]] = {
        n: set() for n in ("actions", "locations", "datatypes", "currencies", "values")
    }
    amount: Decimal | None = None
    unbounded = False
    any_value = False  # a grant (not a scope) without allowed_values: any value goes
    # A grant (not a scope) without locations or datatypes covers every one of them.
    any_location = any_datatype = False
    calls: int | None = None
    end: int | None = None
    # A grant without max_calls or not_after (a plain scope has neither) is unbounded in
    # it, so the largest is too: the attribute is left out, as for a request without any.
    calls_unbounded = end_unbounded = bool(request.scopes)
    for grant in request.details:
        kind = str(grant.get("type"))
        types.add(kind)
        if kind == "scope":
            scopes.add(str(grant.get("scope")))
        for name in ("actions", "locations", "datatypes"):
            sets[name].update(_strings(grant.get(name)))
        if kind != "scope":
            any_location = any_location or not _strings(grant.get("locations"))
            any_datatype = any_datatype or not _strings(grant.get("datatypes"))
        limits = grant.get("limits") or {}
        if "max_amount" in limits:
            value = Decimal(str(limits["max_amount"]))
            amount = value if amount is None else max(amount, value)
            sets["currencies"].add(str(limits["currency"]))
        elif kind != "scope":
            unbounded = True
        if "max_calls" in limits:
            calls = max(calls or 0, int(limits["max_calls"]))
        else:
            calls_unbounded = True
        if "not_after" in limits:
            end = max(end or 0, int(limits["not_after"]))
        else:
            end_unbounded = True
        for name, values in (limits.get("allowed_values") or {}).items():
            sets["values"].update(_value_text(name, v) for v in values)
        if "allowed_values" not in limits and kind != "scope":
            any_value = True
    kinds = set()
    for scope in scopes:
        parsed = scope_rules.parse_scope(scope)
        if parsed is not None:
            kinds.add(f"{parsed[0]}:{parsed[1]}")
    attrs: dict[str, Any] = {
        "scopes": sorted(scopes),
        "scope_kinds": sorted(kinds),
        "types": sorted(types | ({"scope"} if request.scopes else set())),
        **{name: sorted(values) for name, values in sets.items()},
        "unbounded_amount": unbounded,
        "unbounded_values": any_value,
        "unbounded_locations": any_location,
        "unbounded_datatypes": any_datatype,
        "ttl": request.ttl,
    }
    if amount is not None:
        attrs["max_amount"] = _decimal(amount)
    if calls is not None and not calls_unbounded:
        attrs["max_calls"] = calls
    if end is not None and not end_unbounded:
        attrs["not_after"] = end
    return {"uid": {"type": "Grants", "id": "requested"}, "attrs": attrs, "parents": []}


def _value_text(name: str, value: object) -> str:
    """An allowed value as the policy reads it: ``field=text`` for a string, ``field#n``
    for an integer, which grants and resource servers tell apart (a field name holds
    neither ``=`` nor ``#``)."""
    return f"{name}#{value}" if type(value) is int else f"{name}={value}"


def _strings(value: object) -> Iterable[str]:
    if isinstance(value, list):
        return [v for v in value if isinstance(v, str)]
    return ()
