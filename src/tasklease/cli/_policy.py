"""``tasklease policy`` and ``tasklease grant-type``: issuance policy in Cedar and
operators' structured grant types (docs/policy.md, docs/grants.md).

``policy validate`` and ``policy test`` work on files, offline, with the broker's own
engine and schema: ``validate`` checks a tenant's policy files as the broker would load
them (a broken set is refused whole), ``test`` evaluates a request file and prints the
decision and the policies that determined it. ``policy show`` prints the set a broker has
in force (``--default``: the built-in default; ``--schema``: the schema), ``policy
reload`` has it read its files now. The broker's commands need ``admin:keys:*``;
``--tenant`` addresses a tenant's.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from tasklease.cli._common import (
    EXIT_CODES_HELP,
    AdminSecretOpt,
    JsonOpt,
    ProfileOpt,
    UrlOpt,
    admin_client,
    broker_errors,
    fail,
    out,
    print_json,
)
from tasklease.localfiles import read_regular

__all__ = ["grant_type_app", "policy_app", "register"]

policy_app = typer.Typer(
    help="Issuance policy in Cedar: check policy files, show and reload a broker's.\n\n"
    "The validate and test commands work offline, on files; show and reload ask a broker.\n\n"
    + EXIT_CODES_HELP,
    no_args_is_help=True,
)
grant_type_app = typer.Typer(
    help="Structured grant types (RFC 9396 authorization_details) operators add.\n\n"
    "Each is a JSON Schema its grants match and a rule for how one narrows.\n\n" + EXIT_CODES_HELP,
    no_args_is_help=True,
)

_Paths = Annotated[
    list[Path],
    typer.Argument(
        metavar="PATH...", help="Policy files (*.cedar), or directories of them (a tenant's)."
    ),
]


def _policy_files(paths: list[Path]) -> tuple[tuple[str, str], ...]:
    from tasklease.core.policy import PolicyError
    from tasklease.policyfiles import read_policy_file, read_policy_files

    files: list[tuple[str, str]] = []
    for path in paths:
        try:
            if path.is_dir():
                files.extend(read_policy_files(path))
            else:  # read as the broker reads it: an empty file or a pipe fails here too
                files.append((path.name, read_policy_file(path)))
        except (PolicyError, OSError) as exc:
            fail(f"cannot read {path}: {exc}")
    if not files:
        fail("no policy file given (*.cedar files, or a directory holding them)")
    return tuple(files)


def _compiled(paths: list[Path] | None) -> Any:
    from tasklease.core.policy import PolicyError, compile_policies, default_policies

    if not paths:
        return default_policies()
    try:
        return compile_policies(_policy_files(paths), ", ".join(str(p) for p in paths))
    except PolicyError as exc:
        out.print(f"refused: {exc.reason}", highlight=False)
        for error in exc.errors:
            out.print(f"  {error}", highlight=False)
        raise typer.Exit(1) from None


@policy_app.command("validate")
def policy_validate(paths: _Paths, as_json: JsonOpt = False) -> None:
    """Check policy files as a broker loads them: parse, @id on each, the schema."""
    compiled = _compiled(paths)
    if as_json:
        print_json({"valid": True, "policies": list(compiled.ids), "digest": compiled.digest})
        return
    out.print(
        f"valid: {len(compiled.ids)} policies ({', '.join(compiled.ids)}), "
        f"digest {compiled.digest[:12]}",
        highlight=False,
    )


@policy_app.command("test")
def policy_test(
    request_file: Annotated[
        Path,
        typer.Argument(
            metavar="REQUEST_FILE",
            help="A request (JSON): operation, principal {type, id, attrs, tags, app}, "
            "scope, authorization_details, ttl, now, human, depth, domain, within_ceiling.",
        ),
    ],
    policies: Annotated[
        list[Path] | None,
        typer.Option(
            "--policies",
            "-p",
            metavar="PATH",
            help="Policy files or directories (default: the default policy).",
        ),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Evaluate a request against policies, offline; exit 1 when it is denied.

    Prints the decision (ALLOW or DENY) and the policies that determined it.
    """
    from tasklease.bounds import json_document
    from tasklease.core.policy import evaluate
    from tasklease.core.policyrequest import PolicyRequest, RequestFileError

    try:
        text = read_regular(request_file).decode("utf-8")
        request = PolicyRequest.from_json(json_document(text))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        fail(f"the request file {request_file}: {exc}")
    except RequestFileError as exc:  # pragma: no cover - a ValueError, caught above
        fail(str(exc))
    decision = evaluate(_compiled(policies), request)
    if as_json:
        print_json(
            {
                "decision": "allow" if decision.allowed else "deny",
                "policies": list(decision.policies),
                "errors": list(decision.errors),
            }
        )
    else:
        verdict = "ALLOW" if decision.allowed else "DENY"
        determining = ", ".join(decision.policies) or "none (no permit applies)"
        out.print(f"{verdict}  determined by: {determining}", highlight=False)
        for error in decision.errors:
            out.print(f"  error: {error}", highlight=False)
    if not decision.allowed:
        raise typer.Exit(1)


@policy_app.command("show")
def policy_show(
    default: Annotated[
        bool, typer.Option("--default", help="The built-in default policy (no broker).")
    ] = False,
    schema: Annotated[
        bool, typer.Option("--schema", help="The Cedar schema policies are checked against.")
    ] = False,
    as_json: JsonOpt = False,
    url: UrlOpt = None,
    admin_secret: AdminSecretOpt = None,
    profile: ProfileOpt = None,
) -> None:
    """Print the broker's policy set in force (its files), or the default or the schema."""
    if default or schema:
        from tasklease.core.policy import DEFAULT_POLICY
        from tasklease.core.policyrequest import SCHEMA

        typer.echo(SCHEMA if schema else DEFAULT_POLICY, nl=False)
        return
    with broker_errors(), admin_client(url, admin_secret, profile) as admin:
        shown = admin.policy()
    _print_policy(shown, as_json)


@policy_app.command("reload")
def policy_reload(
    as_json: JsonOpt = False,
    url: UrlOpt = None,
    admin_secret: AdminSecretOpt = None,
    profile: ProfileOpt = None,
) -> None:
    """Have the broker read the tenant's policy files now. Exit 1 when they are refused."""
    with broker_errors(), admin_client(url, admin_secret, profile) as admin:
        shown = admin.policy(reload=True)
    _print_policy(shown, as_json, files=False)
    if shown.get("failure"):
        raise typer.Exit(1)


def _print_policy(shown: dict[str, Any], as_json: bool, *, files: bool = True) -> None:
    if as_json:
        print_json(shown)
        return
    out.print(f"origin      {shown.get('origin')}", highlight=False)
    out.print(f"digest      {str(shown.get('digest', ''))[:12]}", highlight=False)
    out.print(f"policies    {', '.join(shown.get('policies') or [])}", highlight=False)
    if shown.get("failure"):
        out.print(f"refused     {shown['failure']}", highlight=False)
    if files:
        for name, text in (shown.get("files") or {}).items():
            out.print(f"\n# --- {name}", highlight=False)
            out.print(str(text), highlight=False)


def _json_object(path: Path, what: str) -> dict[str, Any]:
    from tasklease.bounds import json_document

    try:
        value = json_document(read_regular(path).decode("utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        fail(f"the {what} {path}: {exc}")
    if not isinstance(value, dict):
        fail(f"the {what} {path} must hold a JSON object")
    return value


@grant_type_app.command("add")
def grant_type_add(
    name: Annotated[str, typer.Argument(help="The type's name (the grants' `type`).")],
    schema_file: Annotated[
        Path,
        typer.Option(
            "--schema", metavar="FILE", help="A JSON Schema (2020-12) object schema file."
        ),
    ],
    narrowing_file: Annotated[
        Path | None,
        typer.Option(
            "--narrowing",
            metavar="FILE",
            help="A JSON object: member -> equal, subset, at_most, at_least, prefix or path.",
        ),
    ] = None,
    description: Annotated[
        str | None, typer.Option(metavar="TEXT", help="What the type grants.")
    ] = None,
    as_json: JsonOpt = False,
    url: UrlOpt = None,
    admin_secret: AdminSecretOpt = None,
    profile: ProfileOpt = None,
) -> None:
    """Register a grant type."""
    schema = _json_object(schema_file, "schema file")
    narrowing = _json_object(narrowing_file, "narrowing file") if narrowing_file else {}
    with broker_errors(), admin_client(url, admin_secret, profile) as admin:
        answer = admin.add_grant_type(
            name, schema=schema, narrowing=narrowing, description=description
        )
    if as_json:
        print_json(answer)
        return
    out.print(f"grant type {answer.get('name')} added", highlight=False)


@grant_type_app.command("list")
def grant_type_list(
    as_json: JsonOpt = False,
    url: UrlOpt = None,
    admin_secret: AdminSecretOpt = None,
    profile: ProfileOpt = None,
) -> None:
    """List the tenant's grant types (scope and resource_access are built in)."""
    with broker_errors(), admin_client(url, admin_secret, profile) as admin:
        types = admin.list_grant_types()
    if as_json:
        for found in types:
            print_json(found)
        return
    table = Table("name", "narrowing", "description", "added")
    for t in types:
        narrowing = ", ".join(f"{k}:{v}" for k, v in (t.get("narrowing") or {}).items())
        table.add_row(
            str(t.get("name")),
            narrowing or "(all equal)",
            str(t.get("description") or "-"),
            f"{t.get('created_at')} by {t.get('created_by')}",
        )
    out.print(table)


@grant_type_app.command("show")
def grant_type_show(
    name: Annotated[str, typer.Argument(help="The grant type.")],
    url: UrlOpt = None,
    admin_secret: AdminSecretOpt = None,
    profile: ProfileOpt = None,
) -> None:
    """Print a grant type (JSON: its schema and narrowing rule)."""
    with broker_errors(), admin_client(url, admin_secret, profile) as admin:
        print_json(admin.get_grant_type(name))


@grant_type_app.command("remove")
def grant_type_remove(
    name: Annotated[str, typer.Argument(help="The grant type.")],
    url: UrlOpt = None,
    admin_secret: AdminSecretOpt = None,
    profile: ProfileOpt = None,
) -> None:
    """Remove a grant type: requests naming it are refused from now on."""
    with broker_errors(), admin_client(url, admin_secret, profile) as admin:
        admin.remove_grant_type(name)
    out.print(f"grant type {name} removed", highlight=False)


def register(app: typer.Typer) -> None:
    """Attach ``policy`` and ``grant-type`` to the top-level ``tasklease`` app."""
    app.add_typer(policy_app, name="policy")
    app.add_typer(grant_type_app, name="grant-type")
