"""What operators see: live agents, outstanding launch tokens, revocation entries, a
token's delegation tree and everything of one task, and what a revocation would end.

Read-only views, in keyset pages (opaque cursors), over the store, the revocation index
and the audit log. An agent's state is the kernel's own standing rule
(:meth:`~tasklease.core.kernel.Kernel.standing`); a token's, the revocation index's own
match: nothing here decides anew whether a credential is alive.

Tokens are not stored (only their ``jti`` in the audit log), so the token graph of a task
is read from its audit events: ``token_issued`` (a registration's or resumption's first
token), ``token_renewed`` (``old_jti`` → ``new_jti``), ``delegation_created`` (``from``
an agent, ``parent_jti``) and ``token_exchanged``.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Generic, TypeVar

from tasklease.core.auditformat import clipped, read_fields
from tasklease.core.delegation import principal_ref
from tasklease.core.errors import InvalidRequest, NotFound
from tasklease.core.kernel import Service
from tasklease.core.lineage import app_ancestor
from tasklease.core.records import (
    AgentRecord,
    AgentSession,
    AuditEvent,
    AuditQuery,
    LaunchTokenRecord,
    ListQuery,
    RevocationRecord,
)
from tasklease.core.revocation import LEVELS
from tasklease.core.revoking import revocation_request

__all__ = [
    "AGENT_STATES",
    "AgentView",
    "DelegationView",
    "Inventory",
    "Page",
    "RevocationPreview",
    "TaskView",
    "TokenNode",
    "decode_cursor",
    "encode_cursor",
    "state_of",
]

T = TypeVar("T")

AGENT_STATES = ("active", "revoked", "released", "expired")
DEFAULT_PAGE = 50
MAX_PAGE = 500
# Audit events read for one task's token graph, at most.
MAX_TASK_EVENTS = 20_000
_TOKEN_EVENTS = ("token_issued", "token_renewed", "delegation_created", "token_exchanged")
_JTI = re.compile(r"[0-9a-f]{32}")
_NARROWED = re.compile(r"narrowed jti=([0-9a-f]{32}) to jti=([0-9a-f]{32}) ")
# Every ``principal=`` of a detail, its value quoted or bare (the one counted is the one
# the event's ``principal_ref`` names: in events written before values were quoted, an
# attested subject could hold a ``principal=`` of its own).
_PRINCIPAL = re.compile(r'(?<!\S)principal=(?:"(?:[^"\\]|\\.)*+"?|[^\s,|"]*)')
# An item of such a list: quoted, or up to a space.
_ITEM = re.compile(r'"(?:[^"\\]|\\.)*+"|[^\s"]+')
_UNESCAPE = re.compile(r"\\(.)")
# A scope list the broker wrote (``listed``): ``[a b c]`` and then a field of its own or
# the end. A scope's identifier under a wildcard may end with "]" (``read:data:x]``), so
# the list does not end at its first "]": that hid every scope listed after such a one.
_SCOPE = re.compile(r"(?:^|\s)scope=?\s?\[(.*?)\](?=\s[a-z_]+=|\s*$)")


# --- paging --------------------------------------------------------------------------


def encode_cursor(key: tuple[float, str]) -> str:
    """The opaque cursor that continues a listing after ``key``."""
    raw = json.dumps([key[0], key[1]], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def decode_cursor(cursor: str | None) -> tuple[float, str] | None:
    """The key a cursor continues after; None for no cursor.

    Raises:
        InvalidRequest: the cursor is not one this broker made.
    """
    if not cursor:
        return None
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        number, text = json.loads(raw)
    except (ValueError, TypeError, binascii.Error, RecursionError):
        # RecursionError: caller text of a thousand nested arrays, which no cursor is
        raise InvalidRequest("cursor is malformed", hint="pass next_cursor as given") from None
    if (
        not isinstance(number, int | float)
        or isinstance(number, bool)
        # times and sequence numbers: never near it; NaN fails the comparison, and an
        # integer no float holds is compared, never converted
        or not abs(number) <= _CURSOR_NUMBER
        or not isinstance(text, str)
        or len(text) > _CURSOR_TEXT
        or not _encodable(text)
    ):
        raise InvalidRequest("cursor is malformed", hint="pass next_cursor as given")
    return float(number), text


# What a cursor this broker made can hold: a time or a sequence number, exact as a float,
# and an identifier (a SPIFFE ID at most 2,048 bytes).
_CURSOR_NUMBER = 2**53
_CURSOR_TEXT = 4096


def _encodable(text: str) -> bool:
    """False for text no database can bind (a lone surrogate)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _page_size(limit: int | None) -> int:
    if limit is None or limit <= 0:
        return DEFAULT_PAGE
    return min(limit, MAX_PAGE)


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    """One page of a listing and the cursor of the next ("" when this is the last)."""

    items: list[T]
    next_cursor: str


# --- views ---------------------------------------------------------------------------


def state_of(reason: str) -> str:
    """An agent's state from the kernel's reason it is not in good standing."""
    if not reason:
        return "active"
    if "lifetime ceiling" in reason:
        return "expired"
    if "released" in reason:
        return "released"
    return "revoked"


@dataclass(frozen=True, slots=True)
class AgentView:
    """A registered agent as an operator sees it: its record, its session (while it has
    one), its state and why, and its renewals (used, and left of the broker's budget)."""

    agent: AgentRecord
    session: AgentSession | None
    state: str
    reason: str
    renewals_used: int
    renewals_left: int


@dataclass(slots=True)
class TokenNode:
    """One token of a delegation tree, read from the audit log."""

    jti: str
    parent_jti: str
    operation: str  # register | resume | renew | delegate | exchange
    agent_id: str
    task_id: str
    issued_at: str  # RFC 3339
    expires_at: str  # RFC 3339, or "" when the log does not say
    scope: str  # as the log lists it, or ""
    delegator: str = ""  # the agent that delegated it (delegate only)
    state: str = "active"  # active | revoked | expired
    children: list[TokenNode] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class DelegationView:
    """A token, the chain above it up to its human principal (root first), and the tree
    of tokens made from it."""

    token: TokenNode
    chain: list[TokenNode]
    principal: str
    app_id: str
    root_agent: str


@dataclass(frozen=True, slots=True)
class TaskView:
    """Everything of one task: its agents, its token trees, the revocations naming it
    or its agents, and its latest audit events (newest last)."""

    task_id: str
    agents: list[AgentView]
    trees: list[TokenNode]
    revocations: list[RevocationRecord]
    events: list[AuditEvent]
    events_total: int


@dataclass(frozen=True, slots=True)
class RevocationPreview:
    """What revoking ``level``/``target`` would end: the agents and the tokens known to
    the audit log that are alive now and would not be after."""

    level: str
    target: str
    agents: list[AgentView]
    tokens: list[TokenNode]


# --- the token graph from the audit log ------------------------------------------------


def _fields(detail: str) -> dict[str, str]:
    # A field the broker wrote (``auditformat.read_fields``): a caller's value is quoted
    # when it holds a space, quote or "=", and a field inside its quotes is not read. A
    # bare value ends at "," too: in events written before, ``aud=svc,ttl=1,jti=...``.
    return read_fields(detail)


def _scope_in(detail: str) -> str:
    """The scopes a detail lists, space-separated, each as the caller wrote it: an item
    the broker quoted (``issuing.listed``: one holding a bracket) is read unquoted."""
    match = _SCOPE.search(detail)
    if not match:
        return ""
    return " ".join(
        _UNESCAPE.sub(r"\1", item[1:-1]) if item[0] == '"' else item
        for item in _ITEM.findall(match[1])
    )


def _principal_in(event: AuditEvent) -> str:
    """The principal an ``agent_registered`` event names, "" if it names none.

    The broker writes ``principal=<p> principal_ref=<ref>`` before the attested subject,
    which may hold spaces (an OIDC claim): a subject reading ``... principal=user:ceo``
    named another principal. The one counted is the one whose pseudonym the event's own
    ``principal_ref`` records.
    """
    if not event.principal_ref:
        return ""
    for match in _PRINCIPAL.finditer(event.detail):
        found = read_fields(match[0]).get("principal", "")
        if found and principal_ref(found) == event.principal_ref:
            return found
    return ""


def _plus(timestamp: str, ttl: str | None) -> str:
    if not ttl or not (ttl.isascii() and ttl.isdigit()):
        return ""
    try:
        start = datetime.fromisoformat(timestamp.replace("Z", "+00:00"))
    except ValueError:
        return ""
    try:
        end = datetime.fromtimestamp(start.timestamp() + int(ttl), start.tzinfo)
    except (OverflowError, OSError, ValueError):  # no date: a ttl no broker writes
        return ""
    return end.strftime("%Y-%m-%dT%H:%M:%SZ")


def token_of(event: AuditEvent) -> TokenNode | None:
    """The token an issuing audit event records, or None for any other event."""
    if event.outcome != "success" or event.event_type not in _TOKEN_EVENTS:
        return None
    found = _fields(event.detail)
    jti, parent, delegator = found.get("jti", ""), "", ""
    operation = {"token_renewed": "renew", "token_exchanged": "exchange"}.get(
        event.event_type, "delegate"
    )
    if event.event_type == "token_issued":
        # The broker writes " (resume)" after the lifetime (a caller's value holds no
        # space, so none can write it), then the binding suffix (decision 225).
        operation = "resume" if " (resume)" in event.detail else "register"
    elif event.event_type == "token_renewed":
        jti, parent = found.get("new_jti", ""), found.get("old_jti", "")
    elif event.event_type == "token_exchanged":
        # A narrowing's detail begins with the broker's own words and two of its token ids
        # (core.exchange); a cross-domain exchange's parent is a peer's token, not drawn.
        match = _NARROWED.match(event.detail)
        if match:
            parent, jti = match[1], match[2]
    elif event.event_type == "delegation_created":
        parent = found.get("parent_jti", "")
        match = re.search(r"delegation from (\S+) to", event.detail)
        delegator = match[1] if match else ""
    jti = jti.rstrip(",")
    if not _JTI.fullmatch(jti):
        return None
    return TokenNode(
        jti=jti,
        parent_jti=parent,
        operation=operation,
        agent_id=event.agent_id,
        task_id=event.task_id,
        issued_at=event.timestamp,
        expires_at=_plus(event.timestamp, found.get("ttl", "").rstrip(",")),
        scope=_scope_in(event.detail),
        delegator=delegator,
    )


@dataclass(frozen=True, slots=True)
class _Chain:
    agent: str


@dataclass(frozen=True, slots=True)
class _TokenProbe:
    """A token of the graph as the revocation index sees a token: its jti, holder,
    issue time, task, ancestors (their jtis, its app) and delegators."""

    jti: str
    sub: str
    iat: int
    task_id: str
    lineage: tuple[str, ...]
    delegation_chain: tuple[_Chain, ...]


def _seconds(timestamp: str) -> float:
    try:
        return datetime.fromisoformat(timestamp.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return 0.0


# --- the service ---------------------------------------------------------------------


class Inventory(Service):
    """The operators' read-only views. Thread-safe; one per broker."""

    # -- listings -----------------------------------------------------------------------

    def agents(
        self,
        *,
        app_id: str | None = None,
        task_id: str | None = None,
        principal: str | None = None,
        state: str | None = None,
        cursor: str | None = None,
        limit: int | None = None,
    ) -> Page[AgentView]:
        """Registered agents, newest first, with their state; ``state`` one of
        :data:`AGENT_STATES` keeps only those (a page may then hold fewer than ``limit``
        though more follow: go on while ``next_cursor`` is not empty).

        Raises:
            InvalidRequest: an unknown state or a malformed cursor.
        """
        if state is not None and state not in AGENT_STATES:
            raise InvalidRequest(
                f"invalid state: {clipped(state, 32)}", hint="use " + ", ".join(AGENT_STATES)
            )
        size = _page_size(limit)
        after = decode_cursor(cursor)
        rows = self._store.list_agents(
            ListQuery(
                app_id=app_id or None,
                task_id=task_id or None,
                principal=principal or None,
                after=after,
                limit=size + 1,
            )
        )
        more = len(rows) > size
        rows = rows[:size]
        views = self._views(rows)
        if state is not None:
            views = [v for v in views if v.state == state]
        last = rows[-1][0] if rows and more else None
        return Page(views, encode_cursor((last.registered_at, last.agent_id)) if last else "")

    def _views(self, rows: Sequence[tuple[AgentRecord, AgentSession | None]]) -> list[AgentView]:
        kernel = self._kernel
        sessions = {agent.agent_id: session for agent, session in rows}
        apps: dict[str, str] = {}

        def app_standing(app_id: str) -> str:
            if app_id not in apps:
                apps[app_id] = kernel.app_standing(app_id)
            return apps[app_id]

        budget = self._config.max_renewals
        views = []
        for agent, session in rows:
            reason = kernel.standing(agent, sessions.get, app_standing=app_standing)
            used = session.resumes if session is not None else 0
            views.append(
                AgentView(agent, session, state_of(reason), reason, used, max(0, budget - used))
            )
        return views

    def agent(self, agent_id: str) -> AgentView:
        """One registered agent. Raises NotFound."""
        agent = self._store.get_agent(agent_id)
        if agent is None:
            raise NotFound("no such agent")
        return self._views([(agent, self._store.get_agent_session(agent_id))])[0]

    def launch_tokens(
        self,
        *,
        app_id: str | None = None,
        principal: str | None = None,
        cursor: str | None = None,
        limit: int | None = None,
    ) -> Page[LaunchTokenRecord]:
        """Outstanding launch tokens (a use left, unexpired), newest first."""
        size = _page_size(limit)
        rows = self._store.list_launch_tokens(
            ListQuery(
                app_id=app_id or None,
                principal=principal or None,
                after=decode_cursor(cursor),
                limit=size + 1,
            ),
            self._kernel.now(),
        )
        more = len(rows) > size
        rows = rows[:size]
        last = rows[-1] if rows and more else None
        return Page(rows, encode_cursor((last.created_at, last.token_hash)) if last else "")

    def revocations(
        self, *, level: str | None = None, cursor: str | None = None, limit: int | None = None
    ) -> Page[RevocationRecord]:
        """Stored revocation entries (until they are pruned), newest first.

        Raises:
            InvalidRequest: an unknown level or a malformed cursor.
        """
        if level is not None and level not in LEVELS:
            raise InvalidRequest(
                f"invalid revocation level: {clipped(level, 32)}",
                hint="use token, agent, task or chain",
            )
        size = _page_size(limit)
        rows = self._store.list_revocations(
            ListQuery(level=level or None, after=decode_cursor(cursor), limit=size + 1)
        )
        more = len(rows) > size
        rows = rows[:size]
        return Page(rows, encode_cursor((rows[-1].seq, "")) if rows and more else "")

    # -- tokens, trees and tasks ------------------------------------------------------

    def _task_events(self, task_id: str) -> tuple[list[AuditEvent], int]:
        events: list[AuditEvent] = []
        total = 0
        while len(events) < MAX_TASK_EVENTS:
            page, total = self._store.query_audit(
                AuditQuery(task_id=task_id, limit=1000, offset=len(events))
            )
            events += page
            if len(page) < 1000:
                break
        return events, total

    def _forest(self, events: Sequence[AuditEvent]) -> tuple[list[TokenNode], dict[str, TokenNode]]:
        """The token trees the events record (roots first issued first), and every node
        by jti; each node's state from the revocation index."""
        nodes: dict[str, TokenNode] = {}
        latest: dict[str, TokenNode] = {}  # the latest token of each agent, as issued
        for event in events:
            node = token_of(event)
            if node is None:
                continue
            if node.operation == "delegate" and not node.parent_jti and node.delegator:
                # Before parent_jti was recorded: the delegator's latest token by then.
                held = latest.get(node.delegator)
                node.parent_jti = held.jti if held else ""
            nodes.setdefault(node.jti, node)
            latest[node.agent_id] = node
        roots: list[TokenNode] = []
        for node in nodes.values():
            parent = nodes.get(node.parent_jti)
            if parent is None or parent is node:
                roots.append(node)
            else:
                parent.children.append(node)
        now = self._kernel.now()
        apps: dict[str, str] = {}
        for root in roots:
            agent = self._store.get_agent(root.agent_id)
            app = agent.app_id if agent else ""
            apps[root.jti] = app
            self._mark(root, (app_ancestor(app),) if app else (), (), now)
        return roots, nodes

    def _mark(
        self, node: TokenNode, lineage: tuple[str, ...], chain: tuple[_Chain, ...], now: float
    ) -> None:
        issued = _seconds(node.issued_at)
        probe = _TokenProbe(
            node.jti, node.agent_id, math.floor(issued), node.task_id, lineage, chain
        )
        if self._kernel.revocations.match(probe) is not None:
            node.state = "revoked"
        elif node.expires_at and _seconds(node.expires_at) <= now:
            node.state = "expired"
        for child in node.children:
            hop = (*chain, _Chain(node.agent_id)) if child.operation == "delegate" else chain
            # A delegated or narrowed token's lineage names its parent; a renewal's does not.
            descends = child.operation in ("delegate", "exchange")
            ancestors = (*lineage, node.jti) if descends else lineage
            self._mark(child, ancestors, hop, now)

    def delegations(self, jti: str) -> DelegationView:
        """The token ``jti``, the chain above it to its human principal, the tree below.

        Raises:
            InvalidRequest: ``jti`` is not a token id.
            NotFound: the audit log records no token ``jti``.
        """
        if not _JTI.fullmatch(jti):
            raise InvalidRequest("jti must be 32 lowercase hex characters")
        mentions = self._store.audit_mentioning(f"jti={jti}", _TOKEN_EVENTS, 10)
        task_id = next((e.task_id for e in mentions if token_of(e) is not None), None)
        if task_id is None:
            raise NotFound("no token with this jti is recorded")
        events, _ = self._task_events(task_id)
        _, nodes = self._forest(events)
        token = nodes.get(jti)
        if token is None:
            raise NotFound("no token with this jti is recorded")
        chain: list[TokenNode] = []
        above = nodes.get(token.parent_jti)
        while above is not None and above not in chain:
            chain.insert(0, above)
            above = nodes.get(above.parent_jti)
        root = chain[0] if chain else token
        principal, app_id = self._origin(root.agent_id, events)
        return DelegationView(token, chain, principal, app_id, root.agent_id)

    def _origin(self, agent_id: str, events: Sequence[AuditEvent]) -> tuple[str, str]:
        """The human principal and the app of the agent at the root of a chain."""
        principal = ""
        for event in events:
            if event.event_type == "agent_registered" and event.agent_id == agent_id:
                principal = _principal_in(event)
                break
        session = self._store.get_agent_session(agent_id)
        if not principal and session is not None:
            principal = session.principal
        agent = self._store.get_agent(agent_id)
        return principal, agent.app_id if agent else ""

    def task(self, task_id: str, *, events: int = 100) -> TaskView:
        """Everything of one task. Raises NotFound when nothing of it is recorded."""
        if not task_id:
            raise NotFound("no such task")
        rows = self._store.list_agents(ListQuery(task_id=task_id, limit=1000))
        log, total = self._task_events(task_id)
        if not rows and not log:
            raise NotFound("no such task")
        agents = self._views(rows)
        trees, _ = self._forest(log)
        wanted = {("task", task_id)} | {("agent", a.agent_id) for a, _ in rows}
        wanted |= {("chain", a.agent_id) for a, _ in rows}
        revocations = [
            r for r in self._store.find_revocations(sorted(wanted)) if (r.level, r.target) in wanted
        ]
        return TaskView(task_id, agents, trees, revocations, log[-events:], total)

    def preview(self, level: str, target: str) -> RevocationPreview:
        """What revoking ``level``/``target`` would end, as far as the records tell.

        Raises:
            InvalidRequest: what the revocation itself would refuse
                (:func:`~tasklease.core.revoking.revocation_request`).
        """
        level, target = revocation_request(level, target)
        agents: list[AgentView] = []
        tokens: list[TokenNode] = []
        if level == "task":
            agents = self._views(self._store.list_agents(ListQuery(task_id=target, limit=1000)))
            trees, _ = self._forest(self._task_events(target)[0])
            tokens = _flatten(trees)
        elif level in ("agent", "chain"):
            agent = self._store.get_agent(target)
            if agent is not None:
                trees, _ = self._forest(self._task_events(agent.task_id)[0])
                below = _below_agent(trees, target)
                if level == "agent":
                    below = [n for n in _flatten(trees) if n.agent_id == target] + below
                tokens = below
                ids = {n.agent_id for n in tokens} | ({target} if level == "agent" else set())
                for agent_id in sorted(ids):
                    found = self._store.get_agent(agent_id)
                    if found is not None:
                        agents += self._views([(found, self._store.get_agent_session(agent_id))])
        elif level == "token" and _JTI.fullmatch(target):
            try:
                tree = self.delegations(target).token
            except NotFound:
                tree = None
            tokens = _flatten([tree]) if tree else []
        alive = [t for t in tokens if t.state == "active"]
        return RevocationPreview(level, target, [a for a in agents if a.state == "active"], alive)


def _flatten(trees: Sequence[TokenNode]) -> list[TokenNode]:
    out: list[TokenNode] = []
    stack = list(reversed(trees))
    while stack:
        node = stack.pop()
        out.append(node)
        stack.extend(reversed(node.children))
    return out


def _below_agent(trees: Sequence[TokenNode], agent_id: str) -> list[TokenNode]:
    """The tokens delegated, directly or not, from a token ``agent_id`` held."""
    out: list[TokenNode] = []
    for node in _flatten(trees):
        if node.agent_id == agent_id:
            for child in node.children:
                if child.operation == "delegate":
                    out += _flatten([child])
    seen: set[str] = set()
    return [n for n in out if not (n.jti in seen or seen.add(n.jti))]  # type: ignore[func-returns-value]
