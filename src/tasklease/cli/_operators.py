"""``tasklease operator``: named operators, each with its own credential and role.

These commands need the ``admin`` role (or the admin secret, the built-in admin).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from tasklease.cli._common import (
    EXIT_CODES_HELP,
    AdminSecretOpt,
    JsonOpt,
    ProfileOpt,
    UrlOpt,
    admin_client,
    broker_errors,
    out,
    print_json,
    read_public_key,
)
from tasklease.cli._output import OutputOpt, emit, field

__all__ = ["operator_app", "register"]

operator_app = typer.Typer(
    help="Named operators, each with its own credential and a role.\n\n"
    "The roles: admin (everything), operator (apps, launch tokens, revocation, the audit "
    f"log) or auditor (the audit log only).\n\n{EXIT_CODES_HELP}",
    no_args_is_help=True,
)

NameArg = Annotated[str, typer.Argument(help="The operator's name.")]
KeyOpt = Annotated[
    Path | None,
    typer.Option(
        "--key",
        metavar="PUBLIC_KEY_FILE",
        help="The operator's Ed25519 public key (PEM, e.g. from `openssl pkey -pubout`, or "
        "32 bytes in base64): it signs in with the matching private key. Without: a secret "
        "is generated and shown once.",
    ),
]


def _show_credential(answer: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print_json(answer)
        return
    name, secret = answer.get("name"), answer.get("secret")
    out.print(
        f"operator {name}: role {answer.get('role')}, signs in with a {answer.get('credential')}",
        highlight=False,
    )
    if isinstance(secret, str):
        out.print(f"secret (shown once, save it now): {secret}", highlight=False)
        out.print(
            "[dim]sign in with TASKLEASE_OPERATOR and TASKLEASE_OPERATOR_SECRET, or "
            "operator and operator_secret in the profile[/]",
            markup=True,
        )


@operator_app.command("add")
def operator_add(
    name: Annotated[str, typer.Argument(help="1-64 lowercase letters, digits and hyphens.")],
    role: Annotated[str, typer.Option(metavar="ROLE", help="admin, operator or auditor.")],
    key: KeyOpt = None,
    as_json: JsonOpt = False,
    url: UrlOpt = None,
    admin_secret: AdminSecretOpt = None,
    profile: ProfileOpt = None,
) -> None:
    """Add an operator. Its secret is shown once (or it signs in with --key)."""
    public_key = read_public_key(key) if key is not None else None
    with broker_errors(), admin_client(url, admin_secret, profile) as admin:
        answer = admin.add_operator(name, role, public_key=public_key)
    _show_credential(answer, as_json)


@operator_app.command("list")
def operator_list(
    as_json: JsonOpt = False,
    output: OutputOpt = None,
    url: UrlOpt = None,
    admin_secret: AdminSecretOpt = None,
    profile: ProfileOpt = None,
) -> None:
    """List every operator, active and removed."""
    with broker_errors(), admin_client(url, admin_secret, profile) as admin:
        operators = admin.list_operators()
    if as_json:
        for operator in operators:
            print_json(operator)
        return
    columns = [
        (key, header, field(key))
        for key, header in (
            ("name", "name"),
            ("role", "role"),
            ("credential", "credential"),
            ("status", "status"),
            ("created_at", "created"),
            ("created_by", "by"),
            ("updated_at", "changed"),
        )
    ]
    emit(operators, columns, output)


@operator_app.command("remove")
def operator_remove(
    name: NameArg,
    as_json: JsonOpt = False,
    url: UrlOpt = None,
    admin_secret: AdminSecretOpt = None,
    profile: ProfileOpt = None,
) -> None:
    """Remove an operator: its credential stops working and its tokens are revoked."""
    with broker_errors(), admin_client(url, admin_secret, profile) as admin:
        answer = admin.remove_operator(name)
    if as_json:
        print_json(answer)
    else:
        out.print(
            f"operator {answer.get('name')} removed at {answer.get('removed_at')}; "
            "its tokens are revoked",
            highlight=False,
        )


@operator_app.command("rotate")
def operator_rotate(
    name: NameArg,
    key: KeyOpt = None,
    as_json: JsonOpt = False,
    url: UrlOpt = None,
    admin_secret: AdminSecretOpt = None,
    profile: ProfileOpt = None,
) -> None:
    """Replace an operator's credential; its live tokens are revoked.

    The new credential is a secret, shown once, or the public key given with --key.
    """
    public_key = read_public_key(key) if key is not None else None
    with broker_errors(), admin_client(url, admin_secret, profile) as admin:
        answer = admin.rotate_operator(name, public_key=public_key)
    _show_credential(answer, as_json)


def register(app: typer.Typer) -> None:
    """Attach ``operator`` to the top-level ``tasklease`` app."""
    app.add_typer(operator_app, name="operator")
