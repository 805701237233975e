"""The ``attest`` claim: what an agent proved about itself at registration, and what it only said.

An agent registered with workload evidence (a Kubernetes service-account token, a SPIFFE
JWT-SVID, a CI or cloud OIDC token; docs/attestation.md) carries, in every token of its
lineage, the facts the broker verified::

    "attest": {
      "type": "k8s_sat",                       # the attestor type that verified them
      "attestor": "prod",                      # the operator's name for that attestor
      "iss": "https://kubernetes.default.svc",  # who vouched for them
      "sub": "system:serviceaccount:billing:agent-runner",
      "facts": {"namespace": "billing", "service_account": "agent-runner", ...},
      "declared": {"model": "anthropic/claude/4", "runtime": "sha256:...", "sdk": "..."}
    }

``facts`` are attested: signed by the issuer, checked by the broker. ``declared`` are what
the agent said of itself (model, runtime, SDK version), kept apart and never matched by
:func:`attested`: a policy or a resource server that requires a fact reads only
``facts``. A token registered with a launch token alone carries no ``attest`` claim, or
one of ``type`` ``launch_token`` with only ``declared`` facts.

Facts are flat: names of :data:`FACT_NAME` characters, string values of at most
:data:`MAX_FACT_CHARS` characters, at most :data:`MAX_FACTS` of them. Patterns (for
policies and requirements) are equality or a glob where ``*`` matches any run of
characters and ``?`` one character; nothing else is special (:func:`fact_matches`).

Standard library only: the broker, the verifier and the SDK read the claim the same way.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

__all__ = [
    "ATTEST_CLAIM",
    "DECLARED_NAMES",
    "FACT_NAME",
    "LAUNCH_TOKEN",
    "MAX_FACTS",
    "MAX_FACT_CHARS",
    "MAX_PATTERN_CHARS",
    "AttestClaimError",
    "Attestation",
    "attestation_of",
    "fact_matches",
    "facts_match",
]

ATTEST_CLAIM = "attest"
MAX_FACTS = 32
MAX_FACT_CHARS = 256
MAX_PATTERN_CHARS = 256
FACT_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")
# What an agent may say of itself: its model (provider/name/version), its runtime (image
# digest or code hash) and the SDK it runs. Nothing else: a declared fact is never a fact.
DECLARED_NAMES = frozenset(("model", "runtime", "sdk"))
# The type of a launch-token agent's claim: only what it declared, nothing attested.
LAUNCH_TOKEN = "launch_token"  # noqa: S105 - a type name, not a secret
_TYPE = re.compile(r"[a-z0-9_]{1,32}")
_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,62}")
_MEMBERS = frozenset(("type", "attestor", "iss", "sub", "facts", "declared"))


class AttestClaimError(ValueError):
    """An ``attest`` claim (or facts, or a pattern) is malformed; ``reason`` says how."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _printable(value: str, limit: int) -> bool:
    return 0 < len(value) <= limit and value.isprintable()


def _check_facts(facts: object, what: str, names: frozenset[str] | None) -> dict[str, str]:
    if type(facts) is not dict:
        raise AttestClaimError(f"{what} is not an object")
    if len(facts) > MAX_FACTS:
        raise AttestClaimError(f"{what} holds more than {MAX_FACTS} facts")
    out: dict[str, str] = {}
    for name, value in facts.items():
        if type(name) is not str or FACT_NAME.fullmatch(name) is None:
            raise AttestClaimError(f"{what} has a malformed name")
        if names is not None and name not in names:
            raise AttestClaimError(f"{what} may hold only {', '.join(sorted(names))}")
        if type(value) is not str or not _printable(value, MAX_FACT_CHARS):
            raise AttestClaimError(f"{what}.{name} is not a printable string up to 256")
        out[name] = value
    return out


@dataclass(frozen=True, slots=True)
class Attestation:
    """An ``attest`` claim, read: ``facts`` attested, ``declared`` only said.

    Raises:
        AttestClaimError: a malformed type, attestor name, issuer, subject or fact.
    """

    type: str
    attestor: str = ""
    issuer: str = ""
    subject: str = ""
    facts: Mapping[str, str] = field(default_factory=dict)
    declared: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if type(self.type) is not str or _TYPE.fullmatch(self.type) is None:
            raise AttestClaimError("attest.type malformed")
        if self.attestor and _NAME.fullmatch(self.attestor) is None:
            raise AttestClaimError("attest.attestor malformed")
        for name, value in (("iss", self.issuer), ("sub", self.subject)):
            if value and not _printable(value, 2048):
                raise AttestClaimError(f"attest.{name} malformed")
        facts = _check_facts(dict(self.facts), "attest.facts", None)
        declared = _check_facts(dict(self.declared), "attest.declared", DECLARED_NAMES)
        object.__setattr__(self, "facts", MappingProxyType(facts))
        object.__setattr__(self, "declared", MappingProxyType(declared))

    @property
    def proved(self) -> bool:
        """Whether a platform attested anything: a :data:`LAUNCH_TOKEN` claim carries
        only what the agent declared, so it proves no fact, not even its ``type``."""
        return self.type != LAUNCH_TOKEN

    def attested(self, name: str) -> str | None:
        """The attested fact ``name`` (``sub`` and ``iss`` too), never a declared one;
        None for every name when nothing was attested (:attr:`proved`)."""
        if not self.proved:
            return None
        if name == "sub":
            return self.subject or None
        if name == "iss":
            return self.issuer or None
        if name == "type":
            return self.type
        if name == "attestor":
            return self.attestor or None
        return self.facts.get(name)

    @property
    def ancestor(self) -> str:
        """Its lineage id: ``attest:<type>:<attestor>:<subject>`` (``core.kernel``);
        revoking it (level ``chain``) ends every token registered through it."""
        return f"attest:{self.type}:{self.attestor}:{self.subject}"

    def as_json(self) -> dict[str, Any]:
        """The claim as tokens carry it (empty members left out)."""
        out: dict[str, Any] = {"type": self.type}
        if self.attestor:
            out["attestor"] = self.attestor
        if self.issuer:
            out["iss"] = self.issuer
        if self.subject:
            out["sub"] = self.subject
        if self.facts:
            out["facts"] = dict(self.facts)
        if self.declared:
            out["declared"] = dict(self.declared)
        return out


def attestation_of(payload: Mapping[str, Any]) -> Attestation | None:
    """The token's ``attest`` claim, read; None when it has none.

    Raises:
        AttestClaimError: the claim is present and malformed (refuse the token).
    """
    claim = payload.get(ATTEST_CLAIM)
    if claim is None:
        return None
    if type(claim) is not dict or set(claim) - _MEMBERS:
        raise AttestClaimError("attest claim malformed")
    kind = claim.get("type")
    texts = [claim.get(name, "") for name in ("attestor", "iss", "sub")]
    if type(kind) is not str or any(type(value) is not str for value in texts):
        raise AttestClaimError("attest claim malformed")
    return Attestation(
        kind,
        texts[0],
        texts[1],
        texts[2],
        claim.get("facts", {}),
        claim.get("declared", {}),
    )


def _glob_matches(pattern: str, value: str) -> bool:
    """Whether the whole of ``value`` matches the glob ``pattern`` (``*`` any run, ``?``
    one character, every other character itself), in at most len(pattern) * len(value)
    steps: on a mismatch only the last ``*`` is retried, one character further each
    time. A backtracking regular expression (``.*`` per ``*``) took up to
    len(value) ** stars steps, seconds on one attested value of 256 characters."""
    p = v = 0
    star = -1  # the index of the last ``*`` met in ``pattern``
    resume = 0  # where in ``value`` that ``*``'s run now ends
    while v < len(value):
        if p < len(pattern) and pattern[p] == "*":
            star, resume = p, v
            p += 1
        elif p < len(pattern) and (pattern[p] == "?" or pattern[p] == value[v]):
            p += 1
            v += 1
        elif star >= 0:
            resume += 1
            p, v = star + 1, resume
        else:
            return False
    while p < len(pattern) and pattern[p] == "*":
        p += 1
    return p == len(pattern)


def fact_matches(pattern: str, value: str | None) -> bool:
    """Whether ``value`` matches ``pattern``: equal, or a glob (``*`` any run, ``?`` one
    character; case-sensitive; the whole value). An absent value matches nothing."""
    if value is None:
        return False
    if "*" not in pattern and "?" not in pattern:
        return pattern == value
    return _glob_matches(pattern, value)


def facts_match(required: Mapping[str, str], attestation: Attestation | None) -> str | None:
    """None when ``attestation`` has every attested fact ``required`` names matching its
    pattern; else the name of the first that is missing or differs."""
    for name, pattern in required.items():
        value = attestation.attested(name) if attestation is not None else None
        if not fact_matches(pattern, value):
            return name
    return None
