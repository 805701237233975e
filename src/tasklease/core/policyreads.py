"""What a policy set reads of a request, and its decisions remembered by what it reads.

A Cedar decision is a function of its inputs. When every policy of a set reads no more of
a request than the principal's type, the action and some of the context's attributes
(tasklease's default policy reads ``context.within_ceiling`` alone), two well-typed
requests that agree on those get the same decision, and Cedar need only be asked once:
the first such request is decided by Cedar, schema check included, and its decision
answers the rest (:class:`Remembered`).

:func:`reads_of` finds what a set reads from its policies' JSON form, conservatively: a
policy with any other form (an entity's attribute, an entity literal, the hierarchy,
``has``, an extension function, a template) makes the whole set unremembered, and every
decision goes to Cedar as before. A request that is not well typed
(:meth:`~tasklease.core.policyrequest.PolicyRequest.well_typed`: an integer beyond 64
bits, a string that is not text) always goes to Cedar, so it is still refused by the
schema's check.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from typing import Any, Generic, TypeVar

from tasklease.core.policyrequest import PolicyRequest

__all__ = ["Remembered", "reads_of"]

T = TypeVar("T")

# The expression forms whose value is a function of their operands alone.
_UNARY = frozenset({"!", "neg"})
_BINARY = frozenset({"==", "!=", "<", "<=", ">", ">=", "&&", "||", "+", "-", "*"})
# Bounds the remembered decisions of a set that reads a context attribute of many values
# (the time, say): past it the memory is emptied and starts again.
_CAPACITY = 4096


def reads_of(est: Mapping[str, Any]) -> tuple[str, ...] | None:
    """The context attributes a policy set reads (its JSON form, ``cedarpy``'s
    ``policies_to_json_str``), sorted; None when it reads anything else of a request
    beyond the principal's type and the action, uses a form not recognized here, or
    nests too deeply to be walked."""
    if est.get("templates") or est.get("templateLinks"):
        return None
    names: set[str] = set()
    for policy in (est.get("staticPolicies") or {}).values():
        if not _scope_reads_types_only(policy):
            return None
        for condition in policy.get("conditions") or ():
            if condition.get("kind") not in ("when", "unless"):
                return None
            try:
                if not _context_reads(condition.get("body"), names):
                    return None
            except RecursionError:
                return None
    return tuple(sorted(names))


def _scope_reads_types_only(policy: Mapping[str, Any]) -> bool:
    """The scope tests the principal's and the resource's types at most (no ``==`` or
    ``in`` an entity: ids and hierarchy), and the action by its literal."""
    for part in ("principal", "resource"):
        scope = policy.get(part) or {}
        if scope.get("op") not in ("All", "is") or "in" in scope:
            return False
    action = policy.get("action") or {}
    return action.get("op") in ("All", "==", "in")


def _context_reads(node: object, names: set[str]) -> bool:
    """Whether ``node`` reads nothing but ``context.<attr>`` (adding each to ``names``)
    and literals of booleans, integers and strings."""
    if not isinstance(node, dict) or len(node) != 1:
        return False
    ((form, body),) = node.items()
    if form == "Value":
        return isinstance(body, bool | int | str)
    if form == ".":
        left, attr = body.get("left"), body.get("attr")
        if left != {"Var": "context"} or not isinstance(attr, str):
            return False
        names.add(attr)
        return True
    if form in _UNARY:
        return _context_reads(body.get("arg"), names)
    if form in _BINARY:
        return _context_reads(body.get("left"), names) and _context_reads(body.get("right"), names)
    if form == "if-then-else":
        return all(_context_reads(body.get(k), names) for k in ("if", "then", "else"))
    return False


class Remembered(Generic[T]):
    """The decisions of one policy set that reads only ``context`` (attribute names),
    the principal's type and the action, remembered by those. Thread-safe."""

    def __init__(self, context: tuple[str, ...]) -> None:
        self._context = context
        self._decisions: dict[tuple[Any, ...], T] = {}
        self._lock = threading.Lock()

    def decide(self, request: PolicyRequest, ask: Callable[[], T]) -> T:
        """The decision on ``request``: remembered, or ``ask``'s (Cedar's), remembered
        when the request is well typed."""
        if not request.well_typed():
            return ask()
        situation = request.situation()
        key = (request.actor.type, request.operation, *(situation.get(n) for n in self._context))
        found = self._decisions.get(key)
        if found is not None:
            return found
        decision = ask()
        with self._lock:
            if len(self._decisions) >= _CAPACITY:
                self._decisions.clear()
            self._decisions[key] = decision
        return decision
