"""Operator commands that talk to a broker over HTTP: apps, launch tokens, revocation,
signing keys and status."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from tasklease.cli._common import (
    EXIT_CODES_HELP,
    EXIT_UNAVAILABLE,
    AdminSecretOpt,
    JsonOpt,
    ProfileOpt,
    UrlOpt,
    admin_client,
    broker_errors,
    fail,
    out,
    print_json,
    raw_base64,
)
from tasklease.cli._output import OutputOpt, emit, field
from tasklease.localfiles import read_regular

__all__ = ["app_app", "keys_app", "launch_token_app", "register"]

app_app = typer.Typer(
    help=f"Register and manage apps (clients that launch agents).\n\n{EXIT_CODES_HELP}",
    no_args_is_help=True,
)
launch_token_app = typer.Typer(
    help=f"Create launch tokens that let agents register.\n\n{EXIT_CODES_HELP}",
    no_args_is_help=True,
)
keys_app = typer.Typer(
    help=f"Manage the broker's signing keys.\n\n{EXIT_CODES_HELP}", no_args_is_help=True
)

AppIdArg = Annotated[str, typer.Argument(help="The app's id (app list shows it).")]
ScopeOpt = Annotated[
    list[str],
    typer.Option(
        "--scope",
        "-s",
        metavar="SCOPE",
        help="A scope action:resource:identifier (repeat for more).",
    ),
]


PublicKeyOpt = Annotated[
    Path | None,
    typer.Option(
        "--public-key",
        metavar="FILE",
        help="A file with the app's Ed25519 public key for private_key_jwt: a JWK, the raw "
        "key in base64, or a PEM public key.",
        exists=True,
        dir_okay=False,
    ),
]


def _public_key(path: Path | None) -> str | None:
    """The public key in ``path`` as the broker takes it (PEM is turned into base64)."""
    if path is None:
        return None
    try:
        text = read_regular(path).decode("utf-8").strip()
    except OSError as exc:
        fail(f"cannot read public key {path}: {exc.strerror or exc}")
    except UnicodeDecodeError:
        fail(f"public key {path} is not text: a JWK, base64 or PEM is")
    if not text.startswith("-----BEGIN"):
        return text
    import base64

    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    try:
        key = serialization.load_pem_public_key(text.encode("ascii"))
    except (ValueError, UnicodeEncodeError):
        fail(f"{path}: not a PEM public key")
    if not isinstance(key, Ed25519PublicKey):
        fail(f"{path}: not an Ed25519 public key")
    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")


def _show_app(app: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print_json(app)
        return
    table = Table.grid(padding=(0, 2))
    for key, value in app.items():
        shown = " ".join(value) if isinstance(value, list) else str(value)
        table.add_row(Text(key, style="bold"), shown)
    out.print(table)


@app_app.command("register")
def app_register(
    name: Annotated[str, typer.Argument(help="2-64 lowercase letters, digits and hyphens.")],
    scope: ScopeOpt,
    token_ttl: Annotated[
        int | None,
        typer.Option(metavar="SECONDS", help="App token lifetime in seconds (60-86400)."),
    ] = None,
    public_key: PublicKeyOpt = None,
    as_json: JsonOpt = False,
    url: UrlOpt = None,
    admin_secret: AdminSecretOpt = None,
    profile: ProfileOpt = None,
) -> None:
    """Register an app with a scope ceiling. Its client secret is shown once."""
    key = _public_key(public_key)
    with broker_errors(), admin_client(url, admin_secret, profile) as admin:
        app = admin.register_app(name, scope, token_ttl=token_ttl, public_key=key)
    _show_app(app, as_json)
    if not as_json:
        out.print(
            "[yellow]The client_secret is shown only this once: store it now.[/]", markup=True
        )


@app_app.command("list")
def app_list(
    as_json: JsonOpt = False,
    output: OutputOpt = None,
    url: UrlOpt = None,
    admin_secret: AdminSecretOpt = None,
    profile: ProfileOpt = None,
) -> None:
    """List every app, active and deregistered."""
    with broker_errors(), admin_client(url, admin_secret, profile) as admin:
        apps = admin.list_apps()
    if as_json:
        for app in apps:
            print_json(app)
        return
    columns = [
        ("app_id", "app_id", field("app_id")),
        ("name", "name", field("name")),
        ("client_id", "client_id", field("client_id")),
        ("scopes", "scopes", field("scopes")),
        ("token_ttl", "token ttl", lambda a: f"{a.get('token_ttl', '')} s"),
        ("status", "status", field("status")),
        ("created_at", "created", field("created_at")),
    ]
    emit(apps, columns, output)


@app_app.command("show")
def app_show(
    app_id: AppIdArg,
    as_json: JsonOpt = False,
    url: UrlOpt = None,
    admin_secret: AdminSecretOpt = None,
    profile: ProfileOpt = None,
) -> None:
    """Show one app (exit 1 when there is no such app)."""
    with broker_errors(), admin_client(url, admin_secret, profile) as admin:
        app = admin.get_app(app_id)
    _show_app(app, as_json)


@app_app.command("update")
def app_update(
    app_id: AppIdArg,
    scope: Annotated[
        list[str] | None,
        typer.Option(
            "--scope", "-s", metavar="SCOPE", help="The new scope ceiling (repeat for more)."
        ),
    ] = None,
    token_ttl: Annotated[
        int | None, typer.Option(metavar="SECONDS", help="New app token lifetime (s).")
    ] = None,
    public_key: PublicKeyOpt = None,
    no_public_key: Annotated[
        bool, typer.Option("--no-public-key", help="Remove the app's public key.")
    ] = False,
    as_json: JsonOpt = False,
    url: UrlOpt = None,
    admin_secret: AdminSecretOpt = None,
    profile: ProfileOpt = None,
) -> None:
    """Change an app's scope ceiling, token lifetime and/or public key."""
    if public_key is not None and no_public_key:
        fail("give --public-key or --no-public-key, not both")
    key = "" if no_public_key else _public_key(public_key)
    if not scope and token_ttl is None and key is None:
        fail("give --scope, --token-ttl, --public-key and/or --no-public-key")
    with broker_errors(), admin_client(url, admin_secret, profile) as admin:
        app = admin.update_app(app_id, scopes=scope or None, token_ttl=token_ttl, public_key=key)
    _show_app(app, as_json)


@app_app.command("rotate-secret")
def app_rotate_secret(
    app_id: AppIdArg,
    as_json: JsonOpt = False,
    url: UrlOpt = None,
    admin_secret: AdminSecretOpt = None,
    profile: ProfileOpt = None,
) -> None:
    """Replace an app's client secret; the new one is shown once.

    The old secret, the app's live app tokens and the launch tokens it made stop working at
    once (its agents keep theirs).
    """
    with broker_errors(), admin_client(url, admin_secret, profile) as admin:
        app = admin.rotate_app_secret(app_id)
    _show_app(app, as_json)
    if not as_json:
        out.print(
            "[yellow]The client_secret is shown only this once: store it now. The old one "
            "no longer signs in; the app signs in again with this one (and makes new "
            "launch tokens).[/]",
            markup=True,
        )


@app_app.command("remove")
def app_remove(
    app_id: AppIdArg,
    as_json: JsonOpt = False,
    url: UrlOpt = None,
    admin_secret: AdminSecretOpt = None,
    profile: ProfileOpt = None,
) -> None:
    """Deregister an app: its secret stops working and its app tokens are revoked."""
    with broker_errors(), admin_client(url, admin_secret, profile) as admin:
        app = admin.remove_app(app_id)
    if as_json:
        print_json(app)
    else:
        out.print(f"app {app.get('app_id')} deregistered at {app.get('deregistered_at')}")


@launch_token_app.command("create")
def launch_token_create(
    agent_name: Annotated[
        str, typer.Option(metavar="NAME", help="A label for the agent it launches.")
    ],
    scope: ScopeOpt,
    max_ttl: Annotated[
        int | None,
        typer.Option(metavar="SECONDS", help="Lifetime of the agent's tokens in seconds."),
    ] = None,
    ttl: Annotated[
        int | None,
        typer.Option(
            metavar="SECONDS",
            help="How long the launch token stays valid (s, default 30, at most 3600).",
        ),
    ] = None,
    multi_use: Annotated[
        bool, typer.Option(help="Let several agents register with it (10 unless --max-uses).")
    ] = False,
    max_uses: Annotated[
        int | None,
        typer.Option(
            metavar="N", help="How many agents may register with it (implies --multi-use)."
        ),
    ] = None,
    resume: Annotated[
        bool, typer.Option(help="Whether its agents may resume by key after a restart.")
    ] = True,
    agent_key: Annotated[
        str | None,
        typer.Option(
            metavar="PUBLIC_KEY",
            help="Bind it to one agent: its Ed25519 public key, 32 bytes in standard base64. "
            "No other key registers with it.",
        ),
    ] = None,
    as_json: JsonOpt = False,
    url: UrlOpt = None,
    admin_secret: AdminSecretOpt = None,
    profile: ProfileOpt = None,
) -> None:
    """Create a launch token allowing at most --scope. It is shown once."""
    multi = multi_use or (max_uses is not None and max_uses != 1)
    with broker_errors(), admin_client(url, admin_secret, profile) as admin:
        answer = admin.create_launch_token(
            agent_name,
            scope,
            max_ttl=max_ttl,
            single_use=not multi,
            ttl=ttl,
            max_uses=max_uses,
            allow_resume=None if resume else False,
            agent_key=None if agent_key is None else _agent_key(agent_key),
        )
    if as_json:
        print_json(answer)
        return
    policy = answer.get("policy") or {}
    bound = (
        f"; bound to agent key {escape(str(policy['agent_key']))}"
        if policy.get("agent_key")
        else ""
    )
    out.print(str(answer.get("launch_token")), highlight=False)
    out.print(
        f"[dim]expires {escape(str(answer.get('expires_at')))}; "
        f"uses left {escape(str(answer.get('uses_left')))} of "
        f"{escape(str(answer.get('max_uses')))}; "
        f"scope {escape(' '.join(policy.get('allowed_scope', [])))}; "
        f"agent tokens {escape(str(policy.get('max_ttl')))} s; "
        f"resume {'allowed' if policy.get('allow_resume', True) else 'off'}{bound}[/]",
        highlight=False,
        markup=True,
    )


def _agent_key(text: str) -> bytes:
    """``--agent-key``: 32 bytes in standard base64, or a usage error (exit 2)."""
    raw = raw_base64(text, 32)
    if raw is None:
        fail("--agent-key must be an Ed25519 public key: 32 bytes in standard base64")
    return raw


def revoke(
    level: Annotated[
        str, typer.Option(metavar="LEVEL", help="token (a jti), agent, task or chain.")
    ],
    target: Annotated[
        str, typer.Option(metavar="TARGET", help="The jti, agent SPIFFE ID, task id or chain root.")
    ],
    as_json: JsonOpt = False,
    url: UrlOpt = None,
    admin_secret: AdminSecretOpt = None,
    profile: ProfileOpt = None,
) -> None:
    """Revoke credentials at one of four levels (durable before it answers)."""
    if level not in ("token", "agent", "task", "chain"):
        fail(f"--level must be token, agent, task or chain, not {level!r}")
    with broker_errors(), admin_client(url, admin_secret, profile) as admin:
        answer = admin.revoke(level, target)
    if as_json:
        print_json(answer)
    else:
        count = int(answer.get("count") or 0)
        entries = "1 entry" if count == 1 else f"{count} entries"
        out.print(f"revoked {level} {target} ({entries} written)", highlight=False)


@keys_app.command("rotate")
def keys_rotate(
    as_json: JsonOpt = False,
    url: UrlOpt = None,
    admin_secret: AdminSecretOpt = None,
    profile: ProfileOpt = None,
) -> None:
    """Make a new signing key active; older keys keep verifying until their tokens expire."""
    with broker_errors(), admin_client(url, admin_secret, profile) as admin:
        answer = admin.rotate_signing_key()
    if as_json:
        print_json(answer)
        return
    out.print(f"new signing key {answer.get('kid')} (was {answer.get('previous_kid')})")
    out.print(f"the JWKS now holds {len(answer.get('kids') or [])} keys", highlight=False)


@keys_app.command("list")
def keys_list(
    as_json: JsonOpt = False,
    url: UrlOpt = None,
    profile: ProfileOpt = None,
) -> None:
    """The signing keys the broker's JWKS publishes, the active one first."""
    from tasklease.verify import parse_jwks

    with broker_errors(), admin_client(url, None, profile, need_secret=False) as admin:
        jwks = admin.jwks()
    try:
        # Read by the verifier's rule, as `token inspect` reads it: the kids listed are
        # those of keys resource servers accept, in the broker's order (active first).
        kids = list(parse_jwks(jwks))
    except ValueError:
        fail("the broker's answer is not a JWK Set", EXIT_UNAVAILABLE)
    if as_json:
        print_json({"kids": kids})
        return
    for index, kid in enumerate(kids):
        role = "active: signs new tokens" if index == 0 else "verifies what it signed"
        out.print(f"{kid}  {role}", highlight=False)


# A kid is base64url: one in 64 begins with "-", which would otherwise be read as an option
# (this command has long options only, so any other word beginning with "-" is the kid).
@keys_app.command("retire", context_settings={"ignore_unknown_options": True})
def keys_retire(
    kid: Annotated[str, typer.Argument(help="An older key's kid (tasklease keys list).")],
    as_json: JsonOpt = False,
    url: UrlOpt = None,
    admin_secret: AdminSecretOpt = None,
    profile: ProfileOpt = None,
) -> None:
    """Stop trusting an older signing key at once: nothing it signed verifies any more."""
    with broker_errors(), admin_client(url, admin_secret, profile) as admin:
        answer = admin.retire_signing_key(kid)
    if as_json:
        print_json(answer)
        return
    out.print(f"signing key {answer.get('kid')} retired: nothing it signed verifies now")
    out.print(f"the JWKS now holds {len(answer.get('kids') or [])} keys", highlight=False)


def status(
    as_json: JsonOpt = False,
    url: UrlOpt = None,
    admin_secret: AdminSecretOpt = None,
    profile: ProfileOpt = None,
) -> None:
    """Health, version, signing key and counters of a broker (exit 4 when it is down)."""
    with broker_errors(), admin_client(url, admin_secret, profile, need_secret=False) as admin:
        health = admin.health()
        jwks = admin.jwks()
    health = {**health, "url": admin.broker_url, "verification_keys": len(jwks.get("keys", []))}
    if as_json:
        print_json(health)
    else:
        table = Table.grid(padding=(0, 2))
        for key, value in health.items():
            style = ""
            if key == "status":
                style = "green" if value == "ok" else "bold red"
            table.add_row(Text(key, style="bold"), Text(str(value), style=style))
        out.print(table)
    if health.get("status") != "ok":
        raise typer.Exit(4)


def register(app: typer.Typer) -> None:
    """Attach these commands to the top-level ``tasklease`` app."""
    app.add_typer(app_app, name="app")
    app.add_typer(launch_token_app, name="launch-token")
    app.add_typer(keys_app, name="keys")
    app.command("revoke")(revoke)
    app.command("status")(status)
