"""Attestation policy: which attested facts earn which ceiling.

An attestor's policy is a list of rules; the first whose ``match`` holds for the attested
facts decides the registration's ceiling: the scopes it may ask for (``scope``), the
longest lifetime of one token (``ttl``), the registration's lifetime ceiling across
renewals (``lifetime``), the resources its tokens may be for (``resources``, RFC 8707)
and the principal its work is done for (``principal``)::

    [{"match": {"namespace": "billing", "service_account": "agent-runner"},
      "scope": ["read:invoices:*"], "ttl": 300, "lifetime": 3600}]

``match`` maps a fact name (``namespace``, ``repository``, ``spiffe_id``...; also ``sub``,
``iss``, ``attestor``) to a pattern: equality, or a glob with ``*`` and ``?``
(``rules.attest.fact_matches``). Every named fact must match; declared facts (``model``,
``runtime``) are never matched. Evidence that no rule matches earns nothing: refused.

:func:`decide` is the one place a policy is evaluated, so that another engine (Cedar) can
take its place without any caller changing. The ceiling it returns is applied by the
kernel's issuance check (``core.kernel``), as a launch token's is.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass

from tasklease.core.audience import validate_resources
from tasklease.core.config import Config
from tasklease.core.delegation import validate_principal
from tasklease.core.errors import InvalidRequest, InvalidTarget
from tasklease.core.scopes import validate_scopes
from tasklease.rules.attest import FACT_NAME, MAX_PATTERN_CHARS, Attestation, facts_match

__all__ = [
    "MAX_RULES",
    "Grant",
    "PolicyRule",
    "decide",
    "dump_policy",
    "load_policy",
    "nearest_miss",
    "parse_policy",
]

MAX_RULES = 64
_RULE_MEMBERS = frozenset(("match", "scope", "ttl", "lifetime", "resources", "principal"))


@dataclass(frozen=True, slots=True)
class PolicyRule:
    """One rule: the facts it ``match``-es and the ceiling it grants (0: the broker's)."""

    match: tuple[tuple[str, str], ...]
    scope: tuple[str, ...]
    ttl: int = 0
    lifetime: int = 0
    resources: tuple[str, ...] = ()
    principal: str = ""

    def as_json(self) -> dict[str, object]:
        out: dict[str, object] = {"match": dict(self.match), "scope": list(self.scope)}
        if self.ttl:
            out["ttl"] = self.ttl
        if self.lifetime:
            out["lifetime"] = self.lifetime
        if self.resources:
            out["resources"] = list(self.resources)
        if self.principal:
            out["principal"] = self.principal
        return out


@dataclass(frozen=True, slots=True)
class Grant:
    """What :func:`decide` grants: the ceiling of a registration through attestation.
    ``rule`` is the index of the rule that matched (for the audit log)."""

    rule: int
    scope: tuple[str, ...]
    ttl: int
    lifetime: int
    resources: tuple[str, ...]
    principal: str


def _seconds(value: object, name: str, maximum: int) -> int:
    if value is None:
        return 0
    if type(value) is not int or not 0 < value <= maximum:
        raise InvalidRequest(f"{name} must be a number of seconds from 1 to {maximum}")
    return value


def parse_policy(raw: object, config: Config) -> tuple[PolicyRule, ...]:
    """An operator's policy (a list of rule objects), checked against ``config``'s limits
    (``ttl`` at most ``max_ttl``, ``lifetime`` at most ``renewal_ceiling``).

    Raises:
        InvalidRequest: not a list of at most :data:`MAX_RULES` well-formed rules.
    """
    if not isinstance(raw, list) or not raw or len(raw) > MAX_RULES:
        raise InvalidRequest(f"policy must be a list of 1 to {MAX_RULES} rules")
    rules = []
    for index, item in enumerate(raw):
        where = f"policy[{index}]"
        if not isinstance(item, dict) or set(item) - _RULE_MEMBERS:
            raise InvalidRequest(f"{where} must be an object of {', '.join(sorted(_RULE_MEMBERS))}")
        match = item.get("match", {})
        if not isinstance(match, dict) or len(match) > 32:
            raise InvalidRequest(f"{where}.match must be an object of fact name to pattern")
        pairs = []
        for name, pattern in match.items():
            if not isinstance(name, str) or FACT_NAME.fullmatch(name) is None:
                raise InvalidRequest(f"{where}.match has a malformed fact name")
            if not isinstance(pattern, str) or not 0 < len(pattern) <= MAX_PATTERN_CHARS:
                raise InvalidRequest(f"{where}.match.{name} must be a pattern of 1 to 256 chars")
            pairs.append((name, pattern))
        try:
            resources = validate_resources(item.get("resources"), field=f"{where}.resources")
        except InvalidTarget as exc:
            raise InvalidRequest(exc.detail) from None
        principal = item.get("principal")
        rules.append(
            PolicyRule(
                match=tuple(pairs),
                scope=validate_scopes(item.get("scope"), field=f"{where}.scope"),
                ttl=_seconds(item.get("ttl"), f"{where}.ttl", config.max_ttl),
                lifetime=_seconds(
                    item.get("lifetime"), f"{where}.lifetime", config.renewal_ceiling
                ),
                resources=resources,
                principal="" if principal is None else validate_principal(principal),
            )
        )
    return tuple(rules)


def dump_policy(rules: Sequence[PolicyRule]) -> str:
    """The policy as stored: compact JSON, read back by :func:`load_policy`."""
    return json.dumps([rule.as_json() for rule in rules], separators=(",", ":"), sort_keys=True)


def load_policy(text: str, config: Config) -> tuple[PolicyRule, ...]:
    """A stored policy, parsed again (it was checked when stored)."""
    return parse_policy(json.loads(text), config)


def decide(rules: Sequence[PolicyRule], attestation: Attestation, config: Config) -> Grant | None:
    """The ceiling ``rules`` grant the attested facts, or None: the first rule whose every
    ``match`` pattern matches an attested fact decides; lifetimes default to the broker's
    (``max_ttl``, ``renewal_ceiling``)."""
    for index, rule in enumerate(rules):
        if facts_match(dict(rule.match), attestation) is None:
            return Grant(
                rule=index,
                scope=rule.scope,
                ttl=rule.ttl or config.max_ttl,
                lifetime=rule.lifetime or config.renewal_ceiling,
                resources=rule.resources,
                principal=rule.principal,
            )
    return None


def nearest_miss(rules: Sequence[PolicyRule], attestation: Attestation) -> str:
    """For the audit log when nothing matched: each rule's first fact that missed."""
    return ",".join(
        f"{index}:{facts_match(dict(rule.match), attestation)}" for index, rule in enumerate(rules)
    )
