"""What operators see on the wire (``core.inventory``): live agents, outstanding launch
tokens, revocation entries, a token's delegation tree and one task, in cursor pages."""

from __future__ import annotations

import json
from typing import Annotated

from tasklease.core.clock import format_rfc3339_seconds
from tasklease.core.inventory import AGENT_STATES, DelegationView, Page, TaskView
from tasklease.core.inventory import AgentView as _CoreAgentView
from tasklease.core.inventory import TokenNode as _CoreTokenNode
from tasklease.core.records import LaunchTokenRecord, RevocationRecord
from tasklease.http.wire._base import Failure, Operation, Param, Response, Timestamp, admin, doc
from tasklease.http.wire._broker import RevocationEntry, revocation_entry
from tasklease.http.wire._operators import AuditEvent, audit_event

__all__ = [
    "OPERATIONS",
    "TAGS",
    "AgentPage",
    "AgentView",
    "DelegationTree",
    "LaunchTokenPage",
    "LaunchTokenView",
    "RevocationPage",
    "TaskDetail",
    "TokenNode",
    "agent_page",
    "agent_view",
    "delegation_tree",
    "launch_token_page",
    "revocation_page",
    "task_detail",
]

TAGS = {
    "inventory": "What is alive, for operators: agents, launch tokens, revocations, "
    "delegation trees and tasks. Read-only, paged with cursors, newest first.",
}

_READ = "admin:audit:*"
_NextCursor = Annotated[
    str,
    doc("Pass as `cursor` for the next page; empty when this page is the last."),
]


class AgentView(Response):
    agent_id: Annotated[str, doc("The agent instance's SPIFFE ID.")]
    app_id: Annotated[str, doc("The app that launched it; empty for an operator's.")]
    task_id: Annotated[str, doc("Its task.")]
    orch_id: Annotated[str, doc("Its orchestrator.")]
    principal: Annotated[str, doc("The human it works for; empty once its session ended.")]
    scope: Annotated[list[str], doc("The scope it registered with.")]
    audience: Annotated[list[str], doc("The resources it registered for; empty: default.")]
    binding: Annotated[
        str,
        doc(
            "How its tokens are bound: `dpop`, `mtls`, both (`dpop+mtls`) or `none`.",
            enum=["none", "dpop", "mtls", "dpop+mtls"],
        ),
    ]
    registered_at: Timestamp
    expires_at: Annotated[
        str, doc("When nothing of it can be valid any more (RFC 3339), or empty.")
    ]
    last_heartbeat: Annotated[str, doc("Its latest heartbeat (RFC 3339), or empty.")]
    heartbeat_required: Annotated[bool, doc("Whether silence gets it revoked.")]
    renewals_used: Annotated[int, doc("Renewals and resumptions its lineage used.")]
    renewals_left: Annotated[int, doc("Renewals left of the broker's `max_renewals`.")]
    allow_resume: Annotated[bool, doc("Whether it may resume by key after a restart.")]
    state: Annotated[str, doc("Whether it can still get tokens.", enum=list(AGENT_STATES))]
    state_reason: Annotated[str, doc("Why it is not active; empty when it is.")]


class AgentPage(Response):
    agents: list[AgentView]
    next_cursor: _NextCursor


class LaunchTokenView(Response):
    id: Annotated[
        str,
        doc(
            "The first 12 hex characters of the launch token's SHA-256, as the audit log "
            "names it (`launch_token=`); never the token."
        ),
    ]
    agent_name: Annotated[str, doc("The label of the agents it launches.")]
    allowed_scope: Annotated[list[str], doc("The most an agent may request.")]
    max_ttl: Annotated[int, doc("Lifetime of its agents' tokens, in seconds.")]
    created_at: Timestamp
    expires_at: Timestamp
    created_by: Annotated[str, doc("Who made it (`admin`, `operator:<name>`, `app:<id>`).")]
    app_id: Annotated[str, doc("The app that made it; empty for an operator's.")]
    principal: Annotated[str, doc("The human its agents work for; empty: its creator.")]
    max_uses: Annotated[int, doc("Registrations it admits.")]
    uses_left: Annotated[int, doc("Registrations it still admits.")]
    allow_resume: Annotated[bool, doc("Whether its agents may resume by key.")]
    agent_key: Annotated[
        str, doc("The agent key it is bound to (base64url of the raw key); empty: any key.")
    ]


class LaunchTokenPage(Response):
    launch_tokens: list[LaunchTokenView]
    next_cursor: _NextCursor


class RevocationPage(Response):
    revocations: list[RevocationEntry]
    next_cursor: _NextCursor


class TokenNode(Response):
    jti: Annotated[str, doc("The token's id.")]
    parent_jti: Annotated[str, doc("The token it was made from; empty for a first token.")]
    operation: Annotated[
        str,
        doc("How it was made.", enum=["register", "resume", "renew", "delegate", "exchange"]),
    ]
    agent_id: Annotated[str, doc("Its holder.")]
    task_id: Annotated[str, doc("Its task.")]
    issued_at: Timestamp
    expires_at: Annotated[str, doc("RFC 3339, or empty when the log does not say.")]
    scope: Annotated[list[str], doc("Its scope as the log lists it (empty: not listed).")]
    delegator: Annotated[str, doc("The agent that delegated it; empty unless delegated.")]
    state: Annotated[str, doc("Whether it is alive.", enum=["active", "revoked", "expired"])]
    children: Annotated[list[TokenNode], doc("The tokens made from it, oldest first.")]


class DelegationTree(Response):
    token: Annotated[TokenNode, doc("The token asked for, with the tree below it.")]
    chain: Annotated[
        list[TokenNode],
        doc("The tokens above it, root first (their `children` are left empty)."),
    ]
    root_agent: Annotated[str, doc("The agent at the root of the chain.")]
    app_id: Annotated[str, doc("The root agent's app; empty for an operator's.")]
    principal: Annotated[str, doc("The human principal every token of the chain carries.")]


class TaskDetail(Response):
    task_id: str
    agents: list[AgentView]
    tokens: Annotated[list[TokenNode], doc("The task's token trees, oldest root first.")]
    revocations: Annotated[
        list[RevocationEntry], doc("Stored entries naming the task or one of its agents.")
    ]
    events: Annotated[list[AuditEvent], doc("Its latest audit events, oldest first.")]
    events_total: Annotated[int, doc("All audit events of the task.")]


# --- from the core's views -----------------------------------------------------------


def _binding(cnf: str) -> str:
    try:
        members = json.loads(cnf) if cnf else {}
    except ValueError:
        members = {}
    kinds = [k for k, key in (("dpop", "jkt"), ("mtls", "x5t#S256")) if key in members]
    return "+".join(kinds) or "none"


def _when(seconds: float | None) -> str:
    return format_rfc3339_seconds(seconds) if seconds else ""


def agent_view(view: _CoreAgentView) -> AgentView:
    agent, session = view.agent, view.session
    return AgentView(
        agent_id=agent.agent_id,
        app_id=agent.app_id,
        task_id=agent.task_id,
        orch_id=agent.orch_id,
        principal=session.principal if session else "",
        scope=list(agent.scope),
        audience=list(agent.audience),
        binding=_binding(agent.cnf),
        registered_at=_when(agent.registered_at),
        expires_at=_when(session.expires_at) if session else "",
        last_heartbeat=_when(session.last_heartbeat) if session else "",
        heartbeat_required=bool(session and session.heartbeat_required),
        renewals_used=view.renewals_used,
        renewals_left=view.renewals_left,
        allow_resume=agent.allow_resume,
        state=view.state,
        state_reason=view.reason,
    )


def agent_page(page: Page[_CoreAgentView]) -> AgentPage:
    return AgentPage(agents=[agent_view(v) for v in page.items], next_cursor=page.next_cursor)


def launch_token_view(record: LaunchTokenRecord) -> LaunchTokenView:
    return LaunchTokenView(
        id=record.token_hash[:12],
        agent_name=record.agent_name,
        allowed_scope=list(record.allowed_scope),
        max_ttl=record.max_ttl,
        created_at=_when(record.created_at),
        expires_at=_when(record.expires_at),
        created_by=record.created_by,
        app_id=record.app_id,
        principal=record.principal,
        max_uses=record.max_uses,
        uses_left=record.uses_left,
        allow_resume=record.allow_resume,
        agent_key=record.agent_key,
    )


def launch_token_page(page: Page[LaunchTokenRecord]) -> LaunchTokenPage:
    return LaunchTokenPage(
        launch_tokens=[launch_token_view(r) for r in page.items], next_cursor=page.next_cursor
    )


def revocation_page(page: Page[RevocationRecord]) -> RevocationPage:
    return RevocationPage(
        revocations=[revocation_entry(r) for r in page.items], next_cursor=page.next_cursor
    )


def token_node(node: _CoreTokenNode, *, children: bool = True) -> TokenNode:
    return TokenNode(
        jti=node.jti,
        parent_jti=node.parent_jti,
        operation=node.operation,
        agent_id=node.agent_id,
        task_id=node.task_id,
        issued_at=node.issued_at,
        expires_at=node.expires_at,
        scope=node.scope.split() if node.scope else [],
        delegator=node.delegator,
        state=node.state,
        children=[token_node(c) for c in node.children] if children else [],
    )


def delegation_tree(view: DelegationView) -> DelegationTree:
    return DelegationTree(
        token=token_node(view.token),
        chain=[token_node(n, children=False) for n in view.chain],
        root_agent=view.root_agent,
        app_id=view.app_id,
        principal=view.principal,
    )


def task_detail(view: TaskView) -> TaskDetail:
    return TaskDetail(
        task_id=view.task_id,
        agents=[agent_view(a) for a in view.agents],
        tokens=[token_node(t) for t in view.trees],
        revocations=[revocation_entry(r) for r in view.revocations],
        events=[audit_event(e) for e in view.events],
        events_total=view.events_total,
    )


# --- operations --------------------------------------------------------------------------


def _filter(name: str, what: str) -> Param:
    return Param(name, "query", {"type": "string"}, f"Only those {what}.")


_CURSOR = Param("cursor", "query", {"type": "string"}, "The `next_cursor` of the previous page.")
_LIMIT = Param(
    "limit",
    "query",
    {"type": "integer", "default": 50, "maximum": 500},
    "Page size; 0 or less means 50, more than 500 means 500.",
)
_BAD_PAGE = Failure(
    "invalid_request", "`limit` is not an integer, or `cursor` is not one this broker gave"
)

OPERATIONS = (
    Operation(
        "GET /v1/admin/agents",
        "listAgents",
        "inventory",
        "List agents",
        "Registered agent instances, newest first, each with its state (the broker's own "
        "rule: `active` while it can get tokens; `revoked`, `released` or `expired` and "
        "why), binding, session (principal, heartbeat, expiry) and renewals. With "
        "`state`, a page may hold fewer than `limit` agents though more follow: go on "
        "while `next_cursor` is not empty.",
        admin(_READ),
        AgentPage,
        parameters=(
            _filter("app_id", "launched by this app"),
            _filter("task_id", "of this task"),
            _filter("principal", "working for this principal (`kind:value`)"),
            Param(
                "state",
                "query",
                {"type": "string", "enum": list(AGENT_STATES)},
                "Only agents in this state.",
            ),
            _CURSOR,
            _LIMIT,
        ),
        errors=(
            Failure(
                "invalid_request",
                "`state` is not a state, `limit` is not an integer, or `cursor` is not one "
                "this broker gave",
            ),
        ),
    ),
    Operation(
        "GET /v1/admin/launch-tokens",
        "listLaunchTokens",
        "inventory",
        "List outstanding launch tokens",
        "Launch tokens with a registration left and not expired, newest first: their "
        "policy, uses left and expiry. A launch token is never shown again: `id` is the "
        "start of its SHA-256, as the audit log names it.",
        admin(_READ),
        LaunchTokenPage,
        parameters=(
            _filter("app_id", "made by this app"),
            _filter("principal", "whose agents work for this principal"),
            _CURSOR,
            _LIMIT,
        ),
        errors=(_BAD_PAGE,),
    ),
    Operation(
        "GET /v1/admin/revocations",
        "listRevocationEntries",
        "inventory",
        "List revocation entries",
        "The stored revocation entries (until they can match no valid token and are "
        "pruned), newest first.",
        admin(_READ),
        RevocationPage,
        parameters=(
            Param(
                "level",
                "query",
                {"type": "string", "enum": ["token", "agent", "task", "chain"]},
                "Only entries of this level.",
            ),
            _CURSOR,
            _LIMIT,
        ),
        errors=(
            Failure(
                "invalid_request",
                "`level` is not a level, `limit` is not an integer, or `cursor` is not one "
                "this broker gave",
            ),
        ),
    ),
    Operation(
        "GET /v1/admin/delegations/{jti}",
        "getDelegationTree",
        "inventory",
        "A token's delegation tree",
        "The token `jti` with every token made from it (renewals, delegations, each "
        "with its state), and the chain above it up to the root agent, its app and the "
        "human principal. Read from the audit log.",
        admin(_READ),
        DelegationTree,
        parameters=(Param("jti", "path", {"type": "string"}, "The token's `jti`.", True),),
        errors=(
            Failure("invalid_request", "`jti` is not 32 lowercase hex characters"),
            Failure("not_found", "the audit log records no token with this `jti`"),
        ),
    ),
    Operation(
        "GET /v1/admin/tasks/{task_id}",
        "getTask",
        "inventory",
        "Everything of one task",
        "The task's agents with their states, its token trees, the revocation entries "
        "naming it or its agents, and its latest 100 audit events.",
        admin(_READ),
        TaskDetail,
        parameters=(Param("task_id", "path", {"type": "string"}, "The task id.", True),),
        errors=(Failure("not_found", "no agent or audit event of this task is recorded"),),
    ),
)
