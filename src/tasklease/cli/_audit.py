"""``tasklease audit events|export`` and the HTTP mode of ``audit verify``."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape

from tasklease.cli import _transparency, _witness
from tasklease.cli._common import (
    EXIT_FAILED,
    AdminSecretOpt,
    ConfigOpt,
    DataDirOpt,
    ForceOpt,
    ProfileOpt,
    UrlOpt,
    admin_client,
    broker_errors,
    err,
    fail,
    out,
    print_json,
    private_output,
    write_private,
)
from tasklease.cli._output import OutputOpt, emit, field

if TYPE_CHECKING:
    from rich.progress import Progress

    from tasklease.client import AdminClient
    from tasklease.core.auditcheck import RebuiltTree
    from tasklease.core.records import AuditEvent, AuditQuery, TenantRecord
    from tasklease.core.store import Store

    LocalLog = Callable[[str | None, str | None, str | None], tuple[Store, TenantRecord | None]]

__all__ = ["register", "verify_over_http"]

# How a local command opens the audit log of the database (the broker's own or, with
# --tenant, that tenant's, removed or not): ``main._local_audit_log``, given to register().
_local_log: list[LocalLog] = []

AgentIdOpt = Annotated[
    str | None, typer.Option(metavar="SPIFFE_ID", help="Only events about this agent SPIFFE ID.")
]
TaskIdOpt = Annotated[
    str | None, typer.Option(metavar="TASK_ID", help="Only events of this task id.")
]
EventTypeOpt = Annotated[str | None, typer.Option(metavar="TYPE", help="Only events of this type.")]
OutcomeOpt = Annotated[str | None, typer.Option(metavar="OUTCOME", help="success or denied.")]
PrincipalOpt = Annotated[
    str | None,
    typer.Option(
        metavar="KIND:VALUE",
        help="Only events done for this human principal (kind:value, e.g. user:ada).",
    ),
]
SinceOpt = Annotated[
    str | None, typer.Option(metavar="TIME", help="RFC 3339 time, e.g. 2025-01-01T00:00:00Z.")
]
UntilOpt = Annotated[str | None, typer.Option(metavar="TIME", help="RFC 3339 time, inclusive.")]


def _filters(**values: str | None) -> dict[str, Any]:
    return {k: v for k, v in values.items() if v}


def audit_events(
    agent_id: AgentIdOpt = None,
    task_id: TaskIdOpt = None,
    event_type: EventTypeOpt = None,
    outcome: OutcomeOpt = None,
    since: SinceOpt = None,
    until: UntilOpt = None,
    principal: PrincipalOpt = None,
    limit: Annotated[int, typer.Option(metavar="N", help="Events per page (at most 1000).")] = 50,
    offset: Annotated[int, typer.Option(metavar="N", help="Events to skip.")] = 0,
    as_json: Annotated[bool, typer.Option("--json", help="JSON lines, one event each.")] = False,
    output: OutputOpt = None,
    url: UrlOpt = None,
    admin_secret: AdminSecretOpt = None,
    profile: ProfileOpt = None,
) -> None:
    """Query the audit log (one page, in chain order)."""
    _check_outcome(outcome)
    filters = _filters(
        agent_id=agent_id,
        task_id=task_id,
        event_type=event_type,
        outcome=outcome,
        since=since,
        until=until,
        principal=principal,
    )
    with broker_errors(), admin_client(url, admin_secret, profile) as admin:
        page = admin.audit_events(limit=limit, offset=offset, **filters)
    events: list[dict[str, Any]] = page.get("events") or []
    if as_json:
        for event in events:
            print_json(event)
        return
    # Every cell is data, never markup: an app named "[/]" is shown as written.
    emit(events, _EVENT_COLUMNS, output)
    if output is None and sys.stdout.isatty():
        shown_to = offset + len(events)
        total = escape(str(page.get("total")))
        out.print(
            f"[dim]events {offset + 1 if events else 0}-{shown_to} of {total}[/]", markup=True
        )


_EVENT_COLUMNS = [
    ("id", "id", field("id")),
    ("timestamp", "time", field("timestamp")),
    ("event_type", "event", field("event_type")),
    ("outcome", "outcome", field("outcome")),
    ("agent_id", "agent", field("agent_id")),
    ("task_id", "task", field("task_id")),
    ("detail", "detail", field("detail")),
]


def _check_outcome(outcome: str | None) -> None:
    if outcome is not None and outcome not in ("success", "denied"):
        fail(f"--outcome must be success or denied, not {outcome!r}")


def audit_export(
    ctx: typer.Context,
    agent_id: AgentIdOpt = None,
    task_id: TaskIdOpt = None,
    event_type: EventTypeOpt = None,
    outcome: OutcomeOpt = None,
    since: SinceOpt = None,
    until: UntilOpt = None,
    principal: PrincipalOpt = None,
    output: Annotated[
        Path | None,
        typer.Option(
            "--output", "-o", metavar="FILE", help="Write to this new file (0600), not stdout."
        ),
    ] = None,
    force: ForceOpt = False,
    url: UrlOpt = None,
    admin_secret: AdminSecretOpt = None,
    profile: ProfileOpt = None,
    database: Annotated[
        str | None,
        typer.Option(
            metavar="FILE",
            help="Export from this database file (or URL) directly, not from a broker "
            "(works offline, and for a removed tenant's log with --tenant).",
        ),
    ] = None,
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
) -> None:
    """Every matching event as JSON lines (for a SIEM), in chain order.

    From a running broker (--url, the environment or the profile), or with --database,
    --data-dir or --config from the database itself, as `audit verify` reads it: the
    platform operator's way to a removed tenant's log (`--tenant NAME`).
    """
    _check_outcome(outcome)
    filters = _filters(
        agent_id=agent_id,
        task_id=task_id,
        event_type=event_type,
        outcome=outcome,
        since=since,
        until=until,
        principal=principal,
    )
    # Only what the command line says chooses between the two: a broker URL or a data
    # directory that the environment sets (TASKLEASE_URL, TASKLEASE_DATA_DIR) does not
    # refuse, nor redirect, an export the flags ask for.
    local = database is not None or config is not None or _given(ctx, "data_dir")
    if local and _given(ctx, "url"):
        fail("give either --url or --database (--data-dir, --config), not both")
    local = local or (data_dir is not None and url is None)
    # The audit trail names agents, tasks and principals: a file of it is private (0600),
    # new unless --force, never written through a link, whole or not at all.
    with contextlib.ExitStack() as stack:
        if local:
            query = _local_query(filters)  # refused before the database is opened
            store, _record = _local_log[0](database, config, data_dir)
            stack.callback(store.close)
            events: Iterable[dict[str, Any]] = _store_events(store, query)
        else:
            stack.enter_context(broker_errors())
            admin = stack.enter_context(admin_client(url, admin_secret, profile))
            events = admin.iter_audit_events(**filters)
        if output is None:
            count = _write_lines(events, sys.stdout.write)
            sys.stdout.flush()
        else:
            with private_output(output, force=force) as fh:
                count = _write_lines(events, lambda line: fh.write(line.encode()))
    if output is not None:
        err.print(f"{count} events written to {output}", highlight=False)


def _given(ctx: typer.Context, name: str) -> bool:
    """Whether the option ``name`` was given on the command line (not by its environment
    variable nor its default)."""
    source = ctx.get_parameter_source(name)
    return source is not None and source.name == "COMMANDLINE"


_PAGE = 1000


def _local_query(filters: dict[str, Any]) -> AuditQuery:
    """The store's query for the export's filters, read as ``/v1/audit/events`` reads
    them (``audit_query_time``; the principal by its pseudonym)."""
    from tasklease.core.records import AuditQuery, audit_query_time
    from tasklease.rules.auditchain import principal_ref

    try:
        since = audit_query_time(filters.get("since"), "--since")
        until = audit_query_time(filters.get("until"), "--until")
    except ValueError as exc:
        fail(str(exc))
    principal = filters.get("principal")
    return AuditQuery(
        agent_id=filters.get("agent_id"),
        task_id=filters.get("task_id"),
        event_type=filters.get("event_type"),
        outcome=filters.get("outcome"),
        principal_ref=principal_ref(principal) if principal else None,
        since=since,
        until=until,
        limit=_PAGE,
    )


def _store_events(store: Store, query: AuditQuery) -> Iterator[dict[str, Any]]:
    """Every event of ``store`` matching ``query`` in chain order, each as the broker
    serves it (``wire.audit_event``), read page by page."""
    import dataclasses

    import msgspec

    from tasklease.http.wire import audit_event

    offset = 0
    while True:
        page, _ = store.query_audit(dataclasses.replace(query, offset=offset))
        for event in page:
            yield msgspec.to_builtins(audit_event(event))
        if len(page) < _PAGE:
            return
        offset += len(page)


def _write_lines(events: Iterable[dict[str, Any]], write: Callable[[str], object]) -> int:
    """Each event as one JSON line, ASCII only: an event stored before the sanitizer
    masked C1 controls and U+2028/U+2029 is still one line for every reader."""
    from tasklease.logs import json_line

    count = 0
    for event in events:
        write(json_line(event) + "\n")
        count += 1
    return count


def _as_event(data: dict[str, Any]) -> AuditEvent:
    from tasklease.core.records import AuditEvent

    try:
        return AuditEvent(
            seq=int(data["seq"]),
            timestamp=str(data["timestamp"]),
            event_type=str(data["event_type"]),
            agent_id=str(data["agent_id"]),
            task_id=str(data["task_id"]),
            orch_id=str(data["orch_id"]),
            detail=str(data["detail"]),
            resource=str(data["resource"]),
            outcome=str(data["outcome"]),
            deleg_depth=int(data["deleg_depth"]),
            deleg_chain_hash=str(data["deleg_chain_hash"]),
            request_id=str(data["request_id"]),
            prev_hash=str(data["prev_hash"]),
            hash=str(data["hash"]),
            tenant=str(data.get("tenant", "default")),
            app_id=str(data.get("app_id", "")),
            principal_ref=str(data.get("principal_ref", "")),
            chain_root=str(data.get("chain_root", "")),
            version=int(data.get("version", 1)),
        )
    except (KeyError, TypeError, ValueError):
        fail(f"the broker sent a malformed audit event: {str(data)[:200]}", EXIT_FAILED)


def verify_over_http(
    url: str | None,
    admin_secret: str | None,
    profile: str | None,
    *,
    checkpoint_file: Path | None = None,
    log_keys: list[str] | None = None,
    update: bool = False,
    witnesses: _transparency.Witnessed = _transparency.NO_WITNESSES,
) -> None:
    """Page through every event of the broker's log, walk the hash chain and rebuild the
    Merkle tree: the events must make the tree of the broker's latest checkpoint (signed:
    a writer of the database who edits events and chains them again cannot redo it) and,
    with ``checkpoint_file``, of the checkpoint the user kept, which the latest must
    extend. With ``witnesses``, the latest checkpoint must carry their quorum's
    cosignatures."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from tasklease.core.auditcheck import RebuiltTree
    from tasklease.core.auditformat import verify_chain

    held_note = _transparency.read_checkpoint(checkpoint_file) if checkpoint_file else None
    with broker_errors(), admin_client(url, admin_secret, profile) as admin:
        anchors = _transparency.online_checkpoints(admin, held_note, log_keys, witnesses)
        rebuilt = RebuiltTree(anchors.sizes)
        total = admin.audit_total()
        with Progress(
            TextColumn("verifying audit chain"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=err,
            transient=True,
            disable=total < 5000,
        ) as progress:
            task = progress.add_task("verify", total=total)
            report = verify_chain(_tracked(admin, progress, task, rebuilt))
    _transparency.chain_verdict(report)
    held, latest = anchors.held, anchors.latest
    if held is not None:
        _transparency.checkpoint_verdict(
            held, rebuilt, report.checked, holds="the broker serves", first="its first"
        )
    if latest is not None:
        _transparency.tree_verdict(
            latest.size, latest.root, rebuilt, report.checked, "the broker's latest checkpoint"
        )
    covered = f"; the checkpoint of {latest.size} events matches" if latest else ""
    out.print(
        f"audit chain intact: {report.checked} events, head {report.head_hash}{covered}",
        highlight=False,
    )
    if held is None or latest is None or checkpoint_file is None:
        return
    out.print(
        f"CONSISTENT: {held.origin} grew from {held.size} to {latest.size} events; "
        "none of the ones you held changed",
        highlight=False,
    )
    if update and latest.size > held.size:
        # --update asked for it: a new 0600 file replaces the one read (never a link).
        write_private(checkpoint_file, anchors.latest_note, force=True)
        out.print(
            f"{checkpoint_file} now holds the checkpoint of size {latest.size}", highlight=False
        )


def _tracked(
    admin: AdminClient, progress: Progress, task: Any, rebuilt: RebuiltTree
) -> Iterator[AuditEvent]:
    for n, data in enumerate(admin.iter_audit_events(), 1):
        event = _as_event(data)
        rebuilt.add(event.hash)
        yield event
        if n % 500 == 0:
            progress.update(task, completed=n)


def register(audit_app: typer.Typer, local_log: LocalLog) -> None:
    _local_log[:] = [local_log]
    audit_app.command("events")(audit_events)
    audit_app.command("export")(audit_export)
    _transparency.register(audit_app)
    _witness.register(audit_app)
