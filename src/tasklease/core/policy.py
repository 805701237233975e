"""Issuance policy in Cedar: which app, workload or agent may obtain which grants.

A tenant's policy set is Cedar text (``cedarpy``: Cedar's own engine), checked against
:data:`~tasklease.core.policyrequest.SCHEMA` when it is loaded: every policy must stay
within the nesting Cedar's parser can take (:data:`MAX_POLICY_NESTING`,
:data:`MAX_POLICY_OPERATORS`), parse, type-check and name itself with a unique ``@id``
annotation, or the whole set is refused and the set in force stays (never half-loaded). A
set is compiled once (:func:`compile_policies`) and each decision evaluates the compiled
set (:meth:`PolicyEngine.decide`): Allow only when Cedar says Allow; Deny and NoDecision
(an error, a request the schema refuses) deny. The decision names its determining
policies by their ``@id``, for the audit log.

:data:`DEFAULT_POLICY` is what the broker decided before policies were files (an app's
launch tokens within the app's ceiling; registrations, delegations and exchanges within
their parent's grants), so there is one way decisions are made. The kernel's invariants
(``core.kernel``: grants only narrow, ancestors alive, lifetimes bounded) hold whatever a
policy says; a policy can refuse more, never grant more.

Where the text comes from is an adapter's business (:class:`PolicySource`: the files of
a directory per tenant, ``tasklease.policyfiles``); :meth:`PolicyEngine.reload` swaps in
a changed set without a restart, once its ``policy_loaded`` event is durable.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import msgspec

from tasklease.core.auditformat import clipped, quoted
from tasklease.core.policyreads import Remembered, reads_of
from tasklease.core.policyrequest import SCHEMA, PolicyRequest

__all__ = [
    "DEFAULT_POLICY",
    "DEFAULT_SOURCE",
    "MAX_POLICY_BYTES",
    "MAX_POLICY_NESTING",
    "MAX_POLICY_OPERATORS",
    "CompiledPolicies",
    "Decision",
    "PolicyEngine",
    "PolicyError",
    "PolicySnapshot",
    "PolicySource",
    "ReloadAudit",
    "Reloaded",
    "compile_policies",
    "default_policies",
]

DEFAULT_SOURCE = "built-in default"
DEFAULT_POLICY = """\
// tasklease's default issuance policy: the ceilings it has always applied.

// An app's launch tokens stay within the app's ceiling (its scopes and grants).
@id("app-launch-within-ceiling")
permit (principal is App, action == Action::"launch", resource)
when { context.within_ceiling };

// Operators create launch tokens of any grants.
@id("operator-launch")
permit (principal is Operator, action == Action::"launch", resource);

// Registrations, delegations and exchanges stay within their parent's grants: the
// launch token's (or the attestation policy's) ceiling, the delegator's token, the
// federated domain's mapped scopes. The kernel refuses anything wider whatever a
// policy says.
@id("issue-within-parent")
permit (
  principal,
  action in [Action::"register", Action::"delegate", Action::"narrow", Action::"exchange"],
  resource
)
when { context.within_ceiling };
"""

MAX_POLICY_BYTES = 1_048_576
# Cedar's parser (native code) and the JSON form of a policy recurse once per level of
# nesting: some hundreds of brackets overflow the parser's stack (the process dies), and
# a chain of operators (``a + 1 + 1 ...``, ``x && y && ...``) nests as deep in the JSON
# form without a bracket, past Python's recursion limit. A policy is refused before Cedar
# sees it when it nests deeper or holds more; the broker's own hold under ten of each.
MAX_POLICY_NESTING = 32
MAX_POLICY_OPERATORS = 256


class PolicyError(Exception):
    """A policy set that cannot be loaded; ``errors`` says why, one line each."""

    def __init__(self, reason: str, errors: Sequence[str] = ()) -> None:
        super().__init__(reason)
        self.reason = reason
        self.errors = tuple(errors)

    def __str__(self) -> str:
        return "; ".join((self.reason, *self.errors))


@dataclass(frozen=True, slots=True)
class Decision:
    """A decision: ``allowed``, the ``@id`` of each determining policy (the permits that
    allowed it, or the forbids that denied it; none when nothing permitted), and Cedar's
    errors (an error denies)."""

    allowed: bool
    policies: tuple[str, ...]
    errors: tuple[str, ...] = ()
    digest: str = ""

    def audit(self) -> str:
        """The decision as audit text: `` policy=allow[a,b] set=<digest>``."""
        verdict = "allow" if self.allowed else "deny"
        ids = ",".join(quoted(policy) for policy in self.policies)
        text = f" policy={verdict}[{ids}] policy_set={self.digest[:12]}"
        if self.errors:
            text += f" policy_errors={len(self.errors)}:{clipped(self.errors[0], 200)}"
        return text


@dataclass(frozen=True, slots=True)
class PolicySnapshot:
    """A source's policy files as read: ``(name, text)`` pairs, where they came from,
    and a signature that changes whenever they do."""

    files: tuple[tuple[str, str], ...]
    origin: str
    signature: str


class PolicySource(Protocol):
    """Where a tenant's policies come from (an adapter's: a directory of ``.cedar``
    files). ``snapshot()`` returns None when the tenant has no policies of its own (the
    default applies), and raises :class:`PolicyError` when they cannot be read."""

    def snapshot(self) -> PolicySnapshot | None: ...


@dataclass(frozen=True, slots=True)
class CompiledPolicies:
    """A checked, compiled policy set: its files, their ``@id``s in order, a digest of
    the text, where it came from, and its decisions remembered when it reads little of a
    request (``core.policyreads``; None: each decision asks Cedar)."""

    files: tuple[tuple[str, str], ...]
    ids: tuple[str, ...]
    digest: str
    origin: str
    compiled: Any  # cedarpy.PolicySet; None: no set in force (every decision denies)
    remembered: Remembered[Decision] | None = None

    @property
    def text(self) -> str:
        return "\n".join(text for _, text in self.files)


@functools.cache
def _schema() -> Any:
    """:data:`SCHEMA` as Cedar reads it (a ``cedarpy.Schema``), made at the first set
    compiled: ``cedarpy`` (Cedar's engine and its node types) is imported then, not by
    every command that imports the kernel and decides nothing."""
    import cedarpy

    return cedarpy.Schema.from_str(SCHEMA)


# Cedar's tokens as far as nesting goes: a string (escapes and all) or a comment, whose
# content does not count; a bracket; the end of a policy; and the forms each of which is
# one level of the JSON form (an operator, ``if``, ``.``, and ``[``: an index or a set).
_SHAPE_TOKEN = re.compile(
    r'(?P<skip>"(?:[^"\\]|\\.)*"|//[^\r\n]*)'
    r"|(?P<open>[(\[{])|(?P<close>[)\]}])|(?P<end>;)"
    r"|(?P<operator>&&|\|\||[=!<>]=|[-+*!<>.]|\b(?:in|has|like|is|if)\b)"
)


def _shape_error(text: str) -> str | None:
    """Why ``text`` is refused before Cedar parses it: a policy of it nests brackets
    deeper than :data:`MAX_POLICY_NESTING` or holds more than
    :data:`MAX_POLICY_OPERATORS` operators. None when it does neither."""
    depth = operators = 0
    for token in _SHAPE_TOKEN.finditer(text):
        kind = token.lastgroup
        if kind == "close":
            depth = max(depth - 1, 0)
        elif kind == "end" and depth == 0:
            operators = 0
        elif kind == "open":
            depth += 1
            if depth > MAX_POLICY_NESTING:
                return f"nested too deeply (brackets more than {MAX_POLICY_NESTING} deep)"
        if kind == "operator" or token.group() == "[":
            operators += 1
            if operators > MAX_POLICY_OPERATORS:
                return f"a policy has too many operators (more than {MAX_POLICY_OPERATORS})"
    return None


def compile_policies(files: Sequence[tuple[str, str]], origin: str) -> CompiledPolicies:
    """Parse, check and compile ``files`` (``(name, text)`` pairs) as one set.

    Raises:
        PolicyError: no policy; a file nests too deeply or has too many operators
            (:data:`MAX_POLICY_NESTING`, :data:`MAX_POLICY_OPERATORS`: checked before
            Cedar sees the text) or does not parse; a template, a policy without an
            ``@id`` or an ``@id`` used twice; or the set fails validation against the
            schema (each error names its policy's ``@id``).
    """
    import cedarpy

    files = tuple(files)
    if sum(len(text) for _, text in files) > MAX_POLICY_BYTES:
        raise PolicyError(f"policies of {origin} exceed {MAX_POLICY_BYTES} bytes")
    ids: list[str] = []
    errors: list[str] = []
    reads: set[str] | None = set()
    for name, text in files:
        shape = _shape_error(text)
        if shape is not None:
            errors.append(f"{name}: {shape}")
            continue
        try:
            est = json.loads(cedarpy.policies_to_json_str(text))
        except ValueError as exc:
            errors.append(f"{name}: does not parse: {exc}")
            continue
        except RecursionError:
            errors.append(f"{name}: nested too deeply")
            continue
        read = reads_of(est)
        reads = None if read is None or reads is None else reads | set(read)
        if est.get("templates") or est.get("templateLinks"):
            errors.append(f"{name}: templates are not supported")
        for position, policy in est.get("staticPolicies", {}).items():
            ident = (policy.get("annotations") or {}).get("id")
            if not isinstance(ident, str) or not ident:
                errors.append(f"{name}: {position} has no @id annotation")
            elif ident in ids:
                errors.append(f"{name}: @id {ident!r} is used twice")
            else:
                ids.append(ident)
    if errors:
        raise PolicyError(f"the policies of {origin} are refused", errors)
    if not ids:
        raise PolicyError(f"{origin} holds no policy (remove it to use the default)")
    text = "\n".join(text for _, text in files)
    result = cedarpy.validate_policies(text, _schema())
    if not result.validation_passed:
        names = result.id_annotations_by_policy_id
        raise PolicyError(
            f"the policies of {origin} do not match the schema",
            [f"{names.get(e.policy_id, e.policy_id)}: {e.error}" for e in result.errors],
        )
    compiled = cedarpy.PolicySet.from_str(text)
    digest = hashlib.sha256(
        json.dumps(files, separators=(",", ":"), ensure_ascii=False).encode()
    ).hexdigest()
    remembered = None if reads is None else Remembered[Decision](tuple(sorted(reads)))
    return CompiledPolicies(files, tuple(ids), digest, origin, compiled, remembered)


_DEFAULT: CompiledPolicies | None = None


def default_policies() -> CompiledPolicies:
    """:data:`DEFAULT_POLICY`, compiled once per process."""
    global _DEFAULT  # noqa: PLW0603 - a process-wide cache of a constant's compilation
    if _DEFAULT is None:
        _DEFAULT = compile_policies((("default.cedar", DEFAULT_POLICY),), DEFAULT_SOURCE)
    return _DEFAULT


@dataclass(frozen=True, slots=True)
class Reloaded:
    """What a reload did: the set now in force, or the error that kept the old one."""

    policies: CompiledPolicies | None
    error: PolicyError | None


ReloadAudit = Callable[[Reloaded], object]
"""Records what a reload is about to do (``policy_loaded``, ``policy_load_failed``); raises
when it cannot, and then the reload changes nothing."""


def _compiled(snapshot: PolicySnapshot | None) -> Reloaded:
    """The set ``snapshot`` holds (the default for None), or why it is refused."""
    try:
        policies = (
            default_policies()
            if snapshot is None
            else compile_policies(snapshot.files, snapshot.origin)
        )
    except PolicyError as exc:
        return Reloaded(None, exc)
    return Reloaded(policies, None)


class PolicyEngine:
    """A tenant's policy set in force, and its decisions. Thread-safe."""

    def __init__(self) -> None:
        self._current = default_policies()
        self._signature: str | None = None
        self._source: PolicySource | None = None
        self._failure: PolicyError | None = None
        self._lock = threading.Lock()

    @property
    def current(self) -> CompiledPolicies:
        return self._current

    @property
    def source(self) -> PolicySource | None:
        """The source followed, or None (the default set, or one put in force by hand)."""
        return self._source

    @property
    def failure(self) -> PolicyError | None:
        """Why the set in force is not what the source holds (None when it is)."""
        return self._failure

    def use(self, policies: CompiledPolicies) -> None:
        """Put ``policies`` in force."""
        self._current = policies
        self._failure = None

    def use_source(self, source: PolicySource, audit: ReloadAudit | None = None) -> Reloaded | None:
        """Follow ``source`` from now on, loading it at once (:meth:`reload`).

        Until the source's set is in force no set is: every decision denies (fail
        closed), so a source that cannot be loaded at the start, or whose load cannot be
        audited, leaves no set in force until a reload puts one there.

        Raises:
            whatever ``audit`` raises (:meth:`reload`).
        """
        with self._lock:
            self._source = source
            self._signature = None
            self._current = _refusing(PolicyError("the policies are not loaded yet"))
        outcome = self.reload(audit)
        if outcome is not None and outcome.error is not None:
            self._current = _refusing(outcome.error)
        return outcome

    def reload(self, audit: ReloadAudit | None = None) -> Reloaded | None:
        """Read the source; if it changed, compile it and put it in force, or keep the set
        in force and report why not. None when nothing changed (or there is no source).

        ``audit`` is called with the outcome before anything changes, under the lock
        that serializes reloads: the set goes in force (or its refusal is shown) only
        once ``audit`` has returned. If it raises, nothing changed (the set in force, the
        failure shown and the source's remembered state stay as they were), so the next
        reload does it all again.

        Raises:
            whatever ``audit`` raises.
        """
        with self._lock:
            source = self._source
            if source is None:
                return None
            try:
                snapshot = source.snapshot()
            except PolicyError as exc:
                signature = "unreadable:" + exc.reason
                if signature == self._signature:
                    return None
                outcome = Reloaded(None, exc)
            else:
                signature = snapshot.signature if snapshot is not None else "default"
                if signature == self._signature:
                    return None
                outcome = _compiled(snapshot)
            if audit is not None:
                audit(outcome)
            self._signature = signature
            if outcome.policies is not None:
                self.use(outcome.policies)
            else:
                self._failure = outcome.error
            return outcome

    def decide(self, request: PolicyRequest) -> Decision:
        """Evaluate ``request`` against the set in force."""
        return evaluate(self._current, request)


def evaluate(policies: CompiledPolicies, request: PolicyRequest) -> Decision:
    """The decision of ``policies`` on ``request`` (Allow only on Cedar's Allow), the one
    Cedar gave a request that agrees with it on all the set reads when there was one."""
    if policies.compiled is None:
        return Decision(False, (), (policies.origin,), policies.digest)
    if policies.remembered is not None:
        return policies.remembered.decide(request, lambda: _cedar(policies, request))
    return _cedar(policies, request)


def _cedar(policies: CompiledPolicies, request: PolicyRequest) -> Decision:
    """Cedar's decision of ``policies`` on ``request``, the request checked against the
    schema."""
    import cedarpy  # imported by compile_policies, which made policies.compiled

    cedar_request, entities = _as_json(*request.cedar())
    result = cedarpy.is_authorized(cedar_request, policies.compiled, entities, schema=_schema())
    names = result.diagnostics.id_annotations_by_reason
    determining = tuple(sorted(names.get(p, p) for p in result.diagnostics.reasons))
    errors = tuple(str(e) for e in result.diagnostics.errors)
    allowed = result.decision == cedarpy.Decision.Allow and not errors
    return Decision(allowed, determining, errors, policies.digest)


_encode = msgspec.json.Encoder().encode


def _as_json(
    cedar_request: dict[str, Any], entities: list[dict[str, Any]]
) -> tuple[dict[str, Any], str]:
    """The request with its context as JSON text, and the entities as JSON text: what
    ``cedarpy`` would make of them with ``json.dumps``, encoded by msgspec (a few times
    faster). A value msgspec cannot encode (a lone surrogate in an attested fact) goes
    as it was, so Cedar refuses it as it always did: an error, which denies."""
    try:
        context = _encode(cedar_request["context"]).decode()
        entities_json = _encode(entities).decode()
    except (msgspec.EncodeError, TypeError, ValueError):
        return cedar_request, json.dumps(entities)
    return {**cedar_request, "context": context}, entities_json


def _refusing(error: PolicyError) -> CompiledPolicies:
    """No set in force: every decision denies, naming why."""
    origin = clipped(f"no policy in force: {error}", 500)
    return CompiledPolicies((), (), "none", origin, None)
