"""What is alive, from the command line: ``agents list``, ``launch-token list``,
``revocation list``, ``tree JTI`` and ``task show ID`` (the broker's list APIs)."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.tree import Tree

from tasklease.cli._common import (
    EXIT_CODES_HELP,
    AdminSecretOpt,
    ProfileOpt,
    UrlOpt,
    admin_client,
    broker_errors,
    out,
)
from tasklease.cli._output import Output, OutputOpt, dump, emit, field, plural

__all__ = ["agents_app", "register"]

agents_app = typer.Typer(
    help=f"See the registered agents.\n\n{EXIT_CODES_HELP}", no_args_is_help=True
)
revocation_app = typer.Typer(
    help=f"See the stored revocation entries.\n\n{EXIT_CODES_HELP}", no_args_is_help=True
)
task_app = typer.Typer(help=f"See one task.\n\n{EXIT_CODES_HELP}", no_args_is_help=True)

LimitOpt = Annotated[int, typer.Option(metavar="N", help="Rows per page (at most 500).")]
CursorOpt = Annotated[
    str | None, typer.Option(metavar="CURSOR", help="The next_cursor a previous page gave.")
]
AllOpt = Annotated[bool, typer.Option("--all", help="Every page, not only the first.")]


def _pages(fetch: Any, key: str, every: bool, cursor: str | None) -> tuple[list[Any], str]:
    rows: list[Any] = []
    while True:
        page = fetch(cursor)
        rows += page.get(key) or []
        cursor = page.get("next_cursor") or ""
        if not every or not cursor:
            return rows, cursor


def _more(cursor: str, output: Output | None) -> None:
    if cursor and output not in (Output.json, Output.yaml):
        out.print(
            f"[dim]more: --cursor {escape(cursor)} (or --all)[/]", highlight=False, markup=True
        )


_AGENT_COLUMNS = [
    ("state", "state", field("state")),
    ("agent_id", "agent", field("agent_id")),
    ("task_id", "task", field("task_id")),
    ("app_id", "app", lambda r: str(r.get("app_id") or "operator")),
    ("principal", "principal", field("principal")),
    ("binding", "binding", field("binding")),
    ("registered_at", "registered", field("registered_at")),
    ("last_heartbeat", "last heartbeat", field("last_heartbeat")),
    (
        "renewals",
        "renewals",
        lambda r: f"{r.get('renewals_used')} used, {r.get('renewals_left')} left",
    ),
]


@agents_app.command("list")
def agents_list(
    app_id: Annotated[
        str | None, typer.Option(metavar="APP_ID", help="Only agents of this app.")
    ] = None,
    task_id: Annotated[
        str | None, typer.Option(metavar="TASK_ID", help="Only agents of this task.")
    ] = None,
    principal: Annotated[
        str | None,
        typer.Option(metavar="KIND:VALUE", help="Only agents working for this principal."),
    ] = None,
    state: Annotated[
        str | None, typer.Option(metavar="STATE", help="active, revoked, released or expired.")
    ] = None,
    limit: LimitOpt = 50,
    cursor: CursorOpt = None,
    every: AllOpt = False,
    output: OutputOpt = None,
    url: UrlOpt = None,
    admin_secret: AdminSecretOpt = None,
    profile: ProfileOpt = None,
) -> None:
    """Registered agents, newest first, with their state (exit 2 for an unknown state)."""
    if state is not None and state not in ("active", "revoked", "released", "expired"):
        from tasklease.cli._common import fail

        fail(f"--state must be active, revoked, released or expired, not {state!r}")
    with broker_errors(), admin_client(url, admin_secret, profile) as admin:
        rows, left = _pages(
            lambda c: admin.list_agents(
                app_id=app_id,
                task_id=task_id,
                principal=principal,
                state=state,
                cursor=c,
                limit=limit,
            ),
            "agents",
            every,
            cursor,
        )
    emit(rows, _AGENT_COLUMNS, output, caption=plural(len(rows), "agent"))
    _more(left, output)


_LAUNCH_COLUMNS = [
    ("id", "id", field("id")),
    ("agent_name", "agent name", field("agent_name")),
    ("allowed_scope", "scope", field("allowed_scope")),
    ("uses_left", "uses left", lambda r: f"{r.get('uses_left')} of {r.get('max_uses')}"),
    ("max_ttl", "agent tokens", lambda r: f"{r.get('max_ttl')} s"),
    ("expires_at", "expires", field("expires_at")),
    ("created_by", "created by", field("created_by")),
    ("principal", "principal", lambda r: str(r.get("principal") or "(its creator)")),
]


def launch_token_list(
    app_id: Annotated[
        str | None, typer.Option(metavar="APP_ID", help="Only those made by this app.")
    ] = None,
    principal: Annotated[
        str | None, typer.Option(metavar="KIND:VALUE", help="Only those for this principal.")
    ] = None,
    limit: LimitOpt = 50,
    cursor: CursorOpt = None,
    every: AllOpt = False,
    output: OutputOpt = None,
    url: UrlOpt = None,
    admin_secret: AdminSecretOpt = None,
    profile: ProfileOpt = None,
) -> None:
    """Outstanding launch tokens (a use left, unexpired), newest first; never the token."""
    with broker_errors(), admin_client(url, admin_secret, profile) as admin:
        rows, left = _pages(
            lambda c: admin.list_launch_tokens(
                app_id=app_id, principal=principal, cursor=c, limit=limit
            ),
            "launch_tokens",
            every,
            cursor,
        )
    emit(rows, _LAUNCH_COLUMNS, output, caption=plural(len(rows), "outstanding launch token"))
    _more(left, output)


_REVOCATION_COLUMNS = [
    ("seq", "#", field("seq")),
    ("level", "level", field("level")),
    ("target", "target", field("target")),
    ("revoked_at", "revoked at (unix)", field("revoked_at")),
]


@revocation_app.command("list")
def revocation_list(
    level: Annotated[
        str | None, typer.Option(metavar="LEVEL", help="token, agent, task or chain.")
    ] = None,
    limit: LimitOpt = 50,
    cursor: CursorOpt = None,
    every: AllOpt = False,
    output: OutputOpt = None,
    url: UrlOpt = None,
    admin_secret: AdminSecretOpt = None,
    profile: ProfileOpt = None,
) -> None:
    """Stored revocation entries, newest first."""
    with broker_errors(), admin_client(url, admin_secret, profile) as admin:
        rows, left = _pages(
            lambda c: admin.list_revocations(level=level, cursor=c, limit=limit),
            "revocations",
            every,
            cursor,
        )
    emit(rows, _REVOCATION_COLUMNS, output, caption=plural(len(rows), "entry", "entries"))
    _more(left, output)


def _node(parent: Tree, node: dict[str, Any]) -> None:
    scope = " ".join(node.get("scope") or [])
    label = (
        f"[bold]{escape(str(node.get('state')))}[/] {escape(str(node.get('jti', ''))[:12])} "
        f"{escape(str(node.get('operation')))} held by {escape(str(node.get('agent_id')))}"
        + (f" [dim]scope {escape(scope)}[/]" if scope else "")
    )
    branch = parent.add(label)
    for child in node.get("children") or []:
        _node(branch, child)


def tree(
    jti: Annotated[str, typer.Argument(help="The token's jti (tasklease token inspect shows it).")],
    output: OutputOpt = None,
    url: UrlOpt = None,
    admin_secret: AdminSecretOpt = None,
    profile: ProfileOpt = None,
) -> None:
    """Show a token's delegation tree: the chain above it and every token made from it.

    The chain goes up to the human principal. Exit 1 when the audit log records no such
    token.
    """
    with broker_errors(), admin_client(url, admin_secret, profile) as admin:
        found = admin.delegation_tree(jti)
    if output in (Output.json, Output.yaml):
        dump([found], output)
        return
    root = Tree(
        f"[bold]{escape(str(found.get('principal') or '(unknown principal)'))}[/] "
        f"[dim]human principal; app {escape(str(found.get('app_id') or 'none'))}[/]"
    )
    here = root
    for above in found.get("chain") or []:
        here = here.add(
            f"{escape(str(above.get('state')))} {escape(str(above.get('jti', ''))[:12])} "
            f"{escape(str(above.get('operation')))} held by {escape(str(above.get('agent_id')))}"
        )
    _node(here, found.get("token") or {})
    out.print(root, markup=True)  # the labels' values are escaped


@task_app.command("show")
def task_show(
    task_id: Annotated[str, typer.Argument(help="The task id.")],
    output: OutputOpt = None,
    url: UrlOpt = None,
    admin_secret: AdminSecretOpt = None,
    profile: ProfileOpt = None,
) -> None:
    """Everything of one task: agents, token trees, revocations, latest audit events."""
    with broker_errors(), admin_client(url, admin_secret, profile) as admin:
        found = admin.task(task_id)
    if output in (Output.json, Output.yaml):
        dump([found], output)
        return
    agents = found.get("agents") or []
    emit(agents, _AGENT_COLUMNS, Output.table, caption=plural(len(agents), "agent"))
    trees = Tree(f"[bold]token trees of {escape(task_id)}[/]")
    for node in found.get("tokens") or []:
        _node(trees, node)
    out.print(trees, markup=True)  # the labels' values are escaped
    revocations = found.get("revocations") or []
    out.print(
        f"{plural(len(revocations), 'revocation entry', 'revocation entries')}", highlight=False
    )
    for entry in revocations:
        out.print(
            f"  {entry.get('level')} {entry.get('target')}",
            highlight=False,
        )
    out.print(
        f"[dim]{plural(int(found.get('events_total') or 0), 'audit event')}: "
        f"tasklease audit events --task-id {escape(task_id)}[/]",
        highlight=False,
        markup=True,
    )


def register(app: typer.Typer, launch_token_app: typer.Typer) -> None:
    app.add_typer(agents_app, name="agents")
    app.add_typer(revocation_app, name="revocation")
    app.add_typer(task_app, name="task")
    app.command("tree")(tree)
    launch_token_app.command("list")(launch_token_list)
