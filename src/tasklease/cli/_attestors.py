"""``tasklease attestor``: the workload attestors agents register with instead of a
launch token (Kubernetes service-account tokens, SPIFFE JWT-SVIDs, CI and cloud OIDC).

An attestor is a type, its settings (whose evidence it trusts, and how its keys are
found) and a policy (which attested facts earn which scope ceiling, TTL and lifetime),
both given as JSON files (docs/attestation.md). ``attestor test`` verifies a sample of
evidence the way a registration would, without consuming it, and prints the policy it
would get. These commands need ``admin:keys:*``; ``--tenant`` addresses a tenant's.
"""

from __future__ import annotations

import sys
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

__all__ = ["attestor_app", "register"]

attestor_app = typer.Typer(
    help="Workload attestors: agents register with platform evidence, not a launch token.\n\n"
    "An attestor (k8s_sat, jwt_svid or oidc) says whose evidence the broker trusts, and its "
    "policy what the attested facts earn.\n\n" + EXIT_CODES_HELP,
    no_args_is_help=True,
)

_MAX_FILE = 262144


def _read(path: Path, what: str) -> str:
    """A file's text ('-': standard input), at most 256 KiB."""
    try:
        if str(path) == "-":
            data = sys.stdin.buffer.read(_MAX_FILE + 1)
        else:
            data = read_regular(path, _MAX_FILE + 1)
    except OSError as exc:
        fail(f"cannot read the {what} {path}: {exc.strerror or exc}")
    if len(data) > _MAX_FILE:
        fail(f"the {what} {path} is larger than {_MAX_FILE} bytes")
    try:
        return data.decode("utf-8").strip()
    except UnicodeDecodeError:
        fail(f"the {what} {path} is not UTF-8 text")


def _json_file(path: Path, what: str, kind: type) -> Any:
    from tasklease.bounds import json_document

    try:
        value = json_document(_read(path, what))  # nested too deeply: ValueError
    except ValueError as exc:
        fail(f"the {what} {path} is not JSON: {exc}")
    if not isinstance(value, kind):
        fail(f"the {what} {path} must hold a JSON {'object' if kind is dict else 'array'}")
    return value


def _line(label: str, value: object) -> None:
    # Column 12 as before, and never run together: facts have names up to any length.
    out.print(f"{label:<11} {value}", highlight=False)


@attestor_app.command("add")
def attestor_add(
    name: Annotated[str, typer.Argument(help="The attestor's name (a-z 0-9 - _).")],
    kind: Annotated[
        str,
        typer.Option(
            "--type", metavar="TYPE", help="k8s_sat, jwt_svid or oidc.", show_default=False
        ),
    ],
    settings_file: Annotated[
        Path,
        typer.Option(
            "--settings",
            metavar="FILE",
            help="A JSON object: the type's settings (issuer, keys...).",
        ),
    ],
    policy_file: Annotated[
        Path,
        typer.Option(
            "--policy", metavar="FILE", help="A JSON array of rules: {match, scope, ttl, lifetime}."
        ),
    ],
    jwks_file: Annotated[
        Path | None,
        typer.Option(
            "--jwks-file",
            metavar="FILE",
            help="A JWK Set file (e.g. `kubectl get --raw /openid/v1/jwks`): pins the keys "
            "(the settings' `jwks`), nothing is fetched.",
        ),
    ] = None,
    bundle_file: Annotated[
        Path | None,
        typer.Option(
            "--bundle-file", metavar="FILE", help="jwt_svid: a SPIFFE bundle file (`bundle`)."
        ),
    ] = None,
    ca_file: Annotated[
        Path | None,
        typer.Option(
            "--ca-file",
            metavar="FILE",
            help="PEM CA certificates for the issuer's HTTPS (`ca_pem`).",
        ),
    ] = None,
    app_id: Annotated[
        str | None,
        typer.Option("--app", metavar="APP_ID", help="The app whose agents it registers."),
    ] = None,
    as_json: JsonOpt = False,
    url: UrlOpt = None,
    admin_secret: AdminSecretOpt = None,
    profile: ProfileOpt = None,
) -> None:
    """Configure an attestor (again: replace it)."""
    settings = _json_file(settings_file, "settings file", dict)
    policy = _json_file(policy_file, "policy file", list)
    for option, key, path in (
        ("--jwks-file", "jwks", jwks_file),
        ("--bundle-file", "bundle", bundle_file),
        ("--ca-file", "ca_pem", ca_file),
    ):
        if path is not None:
            if key in settings:
                fail(f"{option} and the settings' {key} both given")
            settings[key] = _read(path, option[2:].replace("-", " "))
    with broker_errors(), admin_client(url, admin_secret, profile) as admin:
        answer = admin.add_attestor(name, kind, settings=settings, policy=policy, app_id=app_id)
    if as_json:
        print_json(answer)
        return
    verb = "replaced" if answer.get("replaced") else "added"
    out.print(
        f"attestor {answer.get('name')} ({answer.get('type')}) {verb}",
        highlight=False,
    )


@attestor_app.command("list")
def attestor_list(
    as_json: JsonOpt = False,
    url: UrlOpt = None,
    admin_secret: AdminSecretOpt = None,
    profile: ProfileOpt = None,
) -> None:
    """List the configured attestors."""
    with broker_errors(), admin_client(url, admin_secret, profile) as admin:
        attestors = admin.list_attestors()
    if as_json:
        for attestor in attestors:
            print_json(attestor)
        return
    table = Table("name", "type", "issuer", "rules", "app", "configured")
    for a in attestors:
        settings = a.get("settings") or {}
        issuer = settings.get("issuer") or settings.get("trust_domain") or "-"
        table.add_row(
            str(a.get("name")),
            str(a.get("type")),
            str(issuer),
            str(len(a.get("policy") or [])),
            str(a.get("app_id") or "-"),
            f"{a.get('created_at')} by {a.get('created_by')}",
        )
    out.print(table)


@attestor_app.command("test")
def attestor_test(
    name: Annotated[str, typer.Argument(help="The attestor to verify with.")],
    evidence_file: Annotated[
        Path,
        typer.Option(
            "--evidence",
            metavar="FILE",
            help="A file holding sample evidence (a token); '-': stdin.",
        ),
    ],
    as_json: JsonOpt = False,
    url: UrlOpt = None,
    admin_secret: AdminSecretOpt = None,
    profile: ProfileOpt = None,
) -> None:
    """Verify sample evidence (not consumed) and print the policy it would get."""
    evidence = _read(evidence_file, "evidence file")
    with broker_errors(), admin_client(url, admin_secret, profile) as admin:
        answer = admin.test_attestor(name, evidence)
    if as_json:
        print_json(answer)
        return
    attest = answer.get("attest") or {}
    _line("subject", attest.get("sub"))
    _line("issuer", attest.get("iss"))
    for fact, value in (attest.get("facts") or {}).items():
        _line(f"  {fact}", value)
    if not answer.get("matched"):
        _line("policy", f"no rule matched (first miss per rule: {answer.get('missed')})")
        raise typer.Exit(1)
    _line("rule", answer.get("rule"))
    _line("scope", " ".join(answer.get("scope") or []))
    _line("ttl", f"{answer.get('ttl')} s")
    _line("lifetime", f"{answer.get('lifetime')} s")
    _line("resources", " ".join(answer.get("resources") or []) or "-")
    _line("principal", answer.get("principal"))
    _line("valid until", answer.get("valid_until"))


@attestor_app.command("remove")
def attestor_remove(
    name: Annotated[str, typer.Argument(help="The attestor to remove.")],
    as_json: JsonOpt = False,
    url: UrlOpt = None,
    admin_secret: AdminSecretOpt = None,
    profile: ProfileOpt = None,
) -> None:
    """Remove an attestor: its evidence is refused from now on."""
    with broker_errors(), admin_client(url, admin_secret, profile) as admin:
        answer = admin.remove_attestor(name)
    if as_json:
        print_json(answer)
    else:
        out.print(f"attestor {answer.get('name')} removed", highlight=False)


def register(app: typer.Typer) -> None:
    """Attach ``attestor`` to the top-level ``tasklease`` app."""
    app.add_typer(attestor_app, name="attestor")
