"""``tasklease tenant``: tenants, each a trust domain of its own on the same broker.

These commands need the default tenant's ``admin`` role (or its admin secret). Every
other remote command addresses one tenant: ``tasklease --tenant NAME ...`` (or
``TASKLEASE_TENANT``, or ``tenant`` in the profile), signed in as one of that tenant's
operators.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer

from tasklease.cli._common import (
    EXIT_CODES_HELP,
    AdminSecretOpt,
    JsonOpt,
    ProfileOpt,
    UrlOpt,
    address_default_tenant,
    admin_client,
    broker_errors,
    out,
    print_json,
)
from tasklease.cli._output import OutputOpt, emit, field

__all__ = ["register", "tenant_app"]

tenant_app = typer.Typer(
    help="Tenants: isolated parts of this broker, each served under /t/<name>/.\n\n"
    "Each has its own SPIFFE trust domain, signing keys, apps, agents, operators and audit "
    f"log. The default tenant's admins manage them.\n\n{EXIT_CODES_HELP}",
    no_args_is_help=True,
)


def _default_tenant_client(url: str | None, admin_secret: str | None, profile: str | None) -> Any:
    # The registry is the default tenant's, whatever --tenant, TASKLEASE_TENANT or the
    # profile's tenant say.
    address_default_tenant()
    return admin_client(url, admin_secret, profile)


@tenant_app.command("create")
def tenant_create(
    name: Annotated[str, typer.Argument(help="1-63 lowercase letters, digits and hyphens.")],
    trust_domain: Annotated[
        str | None,
        typer.Option(
            metavar="DOMAIN", help="Its SPIFFE trust domain (default: <name>.<the broker's>)."
        ),
    ] = None,
    as_json: JsonOpt = False,
    url: UrlOpt = None,
    admin_secret: AdminSecretOpt = None,
    profile: ProfileOpt = None,
) -> None:
    """Create a tenant and its first operator, admin (its secret is shown once)."""
    with broker_errors(), _default_tenant_client(url, admin_secret, profile) as admin:
        answer = admin.create_tenant(name, trust_domain=trust_domain)
    if as_json:
        print_json(answer)
        return
    out.print(
        f"tenant {answer.get('name')}: trust domain "
        f"{answer.get('trust_domain')}, served under "
        f"{answer.get('base_path')}/",
        highlight=False,
    )
    out.print(
        f"operator {answer.get('admin_name')} secret (shown once, save it now): "
        f"{answer.get('admin_secret')}",
        highlight=False,
    )
    out.print(
        "[dim]use it with: tasklease --tenant NAME ... and TASKLEASE_OPERATOR=admin, "
        "TASKLEASE_OPERATOR_SECRET[/]",
        markup=True,
    )


@tenant_app.command("list")
def tenant_list(
    as_json: JsonOpt = False,
    output: OutputOpt = None,
    url: UrlOpt = None,
    admin_secret: AdminSecretOpt = None,
    profile: ProfileOpt = None,
) -> None:
    """List every tenant besides the default one, active and removed."""
    with broker_errors(), _default_tenant_client(url, admin_secret, profile) as admin:
        tenants = admin.list_tenants()
    if as_json:
        for tenant in tenants:
            print_json(tenant)
        return
    columns = [
        (key, header, field(key))
        for key, header in (
            ("name", "name"),
            ("trust_domain", "trust domain"),
            ("status", "status"),
            ("created_at", "created"),
            ("created_by", "by"),
            ("issuer", "issuer"),
        )
    ]
    emit(tenants, columns, output)


@tenant_app.command("remove")
def tenant_remove(
    name: Annotated[str, typer.Argument(help="The tenant's name.")],
    as_json: JsonOpt = False,
    url: UrlOpt = None,
    admin_secret: AdminSecretOpt = None,
    profile: ProfileOpt = None,
) -> None:
    """Remove a tenant: it is no longer served, so none of its credentials work."""
    with broker_errors(), _default_tenant_client(url, admin_secret, profile) as admin:
        answer = admin.remove_tenant(name)
    if as_json:
        print_json(answer)
    else:
        out.print(
            f"tenant {answer.get('name')} removed; its credentials are refused",
            highlight=False,
        )


def register(app: typer.Typer) -> None:
    """Attach ``tenant`` to the top-level ``tasklease`` app."""
    app.add_typer(tenant_app, name="tenant")
