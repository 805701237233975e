"""``tasklease federation``: the other brokers' trust domains this one trusts.

Each federated domain has a SPIFFE bundle, fetched from its bundle endpoint over HTTPS
(SPIFFE Federation ``https_web``) or given as a file, and a policy for its credentials.
These commands need ``admin:keys:*`` (the ``admin`` role, or the admin secret). With
``--tenant`` they address that tenant's federations.
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
    fail,
    out,
    print_json,
)
from tasklease.cli._output import OutputOpt, emit, field
from tasklease.localfiles import read_regular

__all__ = ["federation_app", "register"]

federation_app = typer.Typer(
    help="Federation: the other brokers' trust domains this broker trusts.\n\n"
    "For each: where its SPIFFE bundle comes from, and the policy for its credentials. This "
    "broker's own bundle is at /v1/federation/bundle.\n\n" + EXIT_CODES_HELP,
    no_args_is_help=True,
)

DomainArg = Annotated[
    str, typer.Argument(metavar="DOMAIN", help="The other broker's trust domain.")
]

# What a file given on the command line may be: a bundle or CA certificates, not more.
_MAX_FILE = 65536


def _read_text(path: Path, what: str) -> str:
    try:
        data = read_regular(path, _MAX_FILE + 1)
    except OSError as exc:
        fail(f"cannot read the {what} {path}: {exc.strerror or exc}")
    if len(data) > _MAX_FILE:
        fail(f"the {what} {path} is larger than {_MAX_FILE} bytes")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        fail(f"the {what} {path} is not UTF-8 text")


def _pairs(values: list[str]) -> list[tuple[str, str]]:
    pairs: list[tuple[str, str]] = []
    for value in values:
        foreign, sep, local = value.partition("=")
        if not sep or not foreign or not local:
            fail(f"--map takes FOREIGN=LOCAL (two scopes), not {value!r}")
        pairs.append((foreign, local))
    return pairs


def _show(answer: dict[str, Any]) -> None:
    """One federated domain, as lines for a person; every value as written (never markup)."""

    def line(label: str, value: object) -> None:
        out.print(f"{label:<16}{value}", highlight=False)

    line("trust domain", answer.get("trust_domain"))
    endpoint = answer.get("bundle_endpoint_url")
    line("bundle", f"{endpoint} (CA: {answer.get('ca')})" if endpoint else "static")
    line("status", answer.get("status"))
    line("sequence", answer.get("sequence"))
    line("refresh hint", answer.get("refresh_hint"))
    line("keys", " ".join(str(k) for k in answer.get("kids") or []) or "-")
    line("fetched at", answer.get("fetched_at"))
    line("max bundle age", f"{answer.get('max_bundle_age')} s")
    if answer.get("last_error"):
        line("last error", answer.get("last_error"))
    mapping = answer.get("scope_map") or []
    line("scope map", ", ".join(f"{p[0]}={p[1]}" for p in mapping if len(p) == 2) or "-")
    line("scope ceiling", " ".join(str(s) for s in answer.get("scope_ceiling") or []) or "-")
    line("max ttl", f"{answer.get('max_ttl')} s")
    line("revocation feed", answer.get("revocation_feed") or "-")
    if answer.get("revocation_feed"):
        line("feed heard at", answer.get("feed_heard_at") or "never")
    line("declared", f"{answer.get('created_at')} by {answer.get('created_by')}")


@federation_app.command("add")
def federation_add(
    trust_domain: DomainArg,
    bundle_endpoint: Annotated[
        str | None,
        typer.Option(
            "--bundle-endpoint",
            metavar="URL",
            help="Its bundle endpoint, an https URL (e.g. https://b.example/v1/federation/"
            "bundle); fetched now, then on the bundle's refresh hint.",
        ),
    ] = None,
    bundle_file: Annotated[
        Path | None,
        typer.Option(
            "--bundle-file",
            metavar="FILE",
            help="A static SPIFFE bundle (JSON) instead of an endpoint: read now; run "
            "`federation add` again with the new file to replace it.",
        ),
    ] = None,
    ca_file: Annotated[
        Path | None,
        typer.Option(
            "--ca-file",
            metavar="FILE",
            help="PEM CA certificates the endpoint's certificate must chain to (default: "
            "the system's trust store).",
        ),
    ] = None,
    max_age: Annotated[
        int | None,
        typer.Option(
            "--max-age",
            metavar="SECONDS",
            help="Seconds a fetched bundle stays trusted without a successful refresh "
            "(default 3600); beyond, the domain's credentials are refused.",
        ),
    ] = None,
    mapping: Annotated[
        list[str] | None,
        typer.Option(
            "--map",
            metavar="FOREIGN=LOCAL",
            help="FOREIGN=LOCAL: the domain's scope FOREIGN maps to our scope LOCAL ('*' as "
            "the last part of FOREIGN covers any); repeat for more.",
        ),
    ] = None,
    ceiling: Annotated[
        list[str] | None,
        typer.Option(
            "--ceiling", metavar="SCOPE", help="A local scope bounding what it maps to; repeat."
        ),
    ] = None,
    max_ttl: Annotated[
        int | None,
        typer.Option(
            "--max-ttl",
            metavar="SECONDS",
            help="Longest lifetime of a token minted here from its credentials.",
        ),
    ] = None,
    revocation_feed: Annotated[
        str | None,
        typer.Option(
            "--revocation-feed",
            metavar="URL",
            help="The other broker's base URL (https): follow its revocation feed, so that "
            "its revocations end what this broker derived from its tokens.",
        ),
    ] = None,
    feed_credentials: Annotated[
        str | None,
        typer.Option(
            "--feed-credentials",
            metavar="NAME",
            help="With --revocation-feed: the name of a 0600 JSON file in the broker's "
            "<data-dir>/federation/ directory (<data-dir>/federation/tenants/<tenant>/ for a "
            "tenant) holding the client_id and client_secret of the app the other broker's "
            "operator made for this one (`app register --json`). Only the name is sent.",
        ),
    ] = None,
    as_json: JsonOpt = False,
    url: UrlOpt = None,
    admin_secret: AdminSecretOpt = None,
    profile: ProfileOpt = None,
) -> None:
    """Federate with a trust domain (again: replace its declaration)."""
    if (bundle_endpoint is None) == (bundle_file is None):
        fail("give either --bundle-endpoint or --bundle-file")
    if ca_file is not None and bundle_endpoint is None:
        fail("--ca-file goes with --bundle-endpoint")
    bundle = _read_text(bundle_file, "bundle file") if bundle_file is not None else None
    ca_pem = _read_text(ca_file, "CA file") if ca_file is not None else None
    with broker_errors(), admin_client(url, admin_secret, profile) as admin:
        answer = admin.add_federation(
            trust_domain,
            bundle_endpoint_url=bundle_endpoint,
            bundle=bundle,
            ca_pem=ca_pem,
            max_bundle_age=max_age,
            scope_map=_pairs(mapping or []) if mapping else None,
            scope_ceiling=ceiling or None,
            max_ttl=max_ttl,
            revocation_feed=revocation_feed,
            feed_credentials_file=feed_credentials,
        )
    if as_json:
        print_json(answer)
        return
    verb = "replaced" if answer.get("replaced") else "added"
    out.print(
        f"federation with {answer.get('trust_domain')} {verb}: bundle {answer.get('status')}",
        highlight=False,
    )
    _show(answer)


@federation_app.command("list")
def federation_list(
    as_json: JsonOpt = False,
    output: OutputOpt = None,
    url: UrlOpt = None,
    admin_secret: AdminSecretOpt = None,
    profile: ProfileOpt = None,
) -> None:
    """List the federated trust domains and their bundles' state."""
    with broker_errors(), admin_client(url, admin_secret, profile) as admin:
        federations = admin.list_federations()
    if as_json:
        for federation in federations:
            print_json(federation)
        return
    columns = [
        ("trust_domain", "trust domain", field("trust_domain")),
        ("bundle_endpoint_url", "bundle", lambda f: str(f.get("bundle_endpoint_url") or "static")),
        ("status", "status", field("status")),
        ("sequence", "sequence", field("sequence")),
        ("kids", "keys", lambda f: str(len(f.get("kids") or []))),
        ("fetched_at", "fetched", lambda f: str(f.get("fetched_at") or "-")),
        ("last_error", "error", field("last_error")),
    ]
    emit(federations, columns, output)


@federation_app.command("show")
def federation_show(
    trust_domain: DomainArg,
    as_json: JsonOpt = False,
    url: UrlOpt = None,
    admin_secret: AdminSecretOpt = None,
    profile: ProfileOpt = None,
) -> None:
    """Show one federated trust domain: its bundle, last error and policy."""
    with broker_errors(), admin_client(url, admin_secret, profile) as admin:
        answer = admin.get_federation(trust_domain)
    if as_json:
        print_json(answer)
    else:
        _show(answer)


@federation_app.command("remove")
def federation_remove(
    trust_domain: DomainArg,
    as_json: JsonOpt = False,
    url: UrlOpt = None,
    admin_secret: AdminSecretOpt = None,
    profile: ProfileOpt = None,
) -> None:
    """Stop trusting a trust domain: its credentials are refused from now on."""
    with broker_errors(), admin_client(url, admin_secret, profile) as admin:
        answer = admin.remove_federation(trust_domain)
    if as_json:
        print_json(answer)
    else:
        out.print(
            f"federation with {answer.get('trust_domain')} removed",
            highlight=False,
        )


def register(app: typer.Typer) -> None:
    """Attach ``federation`` to the top-level ``tasklease`` app."""
    app.add_typer(federation_app, name="federation")
