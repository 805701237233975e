"""``tasklease login`` and ``logout``: sign in once, then use a cached short-lived
operator token, so each command no longer pays the broker's argon2 check of a secret.

The token (never the secret) is kept in ``$XDG_CONFIG_HOME/tasklease/sessions/`` (or
``~/.config/tasklease/sessions/``), one 0600 file per broker URL and tenant, until it
expires (the broker's ``admin_token_ttl``, 5 minutes by default). ``logout`` deletes it.
"""

from __future__ import annotations

import getpass
import json
import os
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from tasklease.cli._common import (
    EXIT_UNAVAILABLE,
    AdminSecretOpt,
    ProfileOpt,
    UrlOpt,
    broker_errors,
    fail,
    out,
    resolve_connection,
    write_private,
)
from tasklease.cli._sessions import session_path, session_subject

__all__ = ["register"]


def _write(path: Path, document: dict[str, Any]) -> None:
    from tasklease.localfiles import make_private_directories

    make_private_directories(path.parent)  # ~/.config/tasklease too, when it is made here
    os.chmod(path.parent, 0o700)
    write_private(path, json.dumps(document), force=True, force_flag=None)


def login(
    operator: Annotated[
        str | None,
        typer.Option(
            metavar="NAME", help="Sign in as this named operator (default TASKLEASE_OPERATOR)."
        ),
    ] = None,
    url: UrlOpt = None,
    admin_secret: AdminSecretOpt = None,
    profile: ProfileOpt = None,
) -> None:
    """Sign in once; the next commands use a cached short-lived operator token (0600)."""
    from tasklease.client import AdminClient

    if operator:
        os.environ["TASKLEASE_OPERATOR"] = operator
    connection = resolve_connection(url, admin_secret, profile, need_secret=False)
    name, secret, key = connection.operator, connection.operator_secret, connection.operator_key
    admin = connection.admin_secret
    if name is None and admin is None:
        name = (
            typer.prompt("Operator name (empty: the admin secret)", default="", show_default=False)
            or None
        )
    if name is not None and not secret and key is None:
        secret = getpass.getpass(f"Secret of operator {name}: ")
    elif name is None and not admin:
        admin = getpass.getpass("Admin secret: ")
    if not (secret or key or admin):
        fail("no secret given")
    with (
        broker_errors(),
        AdminClient(
            connection.url,
            admin,
            operator=name,
            operator_secret=secret,
            operator_key=key,
            insecure_http=connection.insecure_http,
            verify=connection.verify,
        ) as client,
    ):
        answer = client.sign_in()
    from tasklease.bounds import lifetime  # with the SDK: loaded by commands that sign in

    life = lifetime(answer.get("expires_in"))
    if life is None or type(answer.get("access_token")) is not str:
        fail(
            f"{connection.url} answered the sign-in without a token and its lifetime",
            EXIT_UNAVAILABLE,
        )
    path = session_path(connection.url)
    _write(
        path,
        {
            "url": connection.url.rstrip("/"),
            "operator": name or "admin",
            "subject": session_subject(name),
            "access_token": answer.get("access_token"),
            "expires_at": time.time() + life,
        },
    )
    who = name or "admin (the admin secret)"
    out.print(
        f"signed in to {connection.url} as {who} for {life} s; "
        f"the token is cached in {path} (mode 0600)",
        highlight=False,
    )


def logout(
    url: UrlOpt = None,
    profile: ProfileOpt = None,
) -> None:
    """Forget the cached session for the broker (exit 0 whether or not there was one)."""
    connection = resolve_connection(
        url, None, profile, need_secret=False, credentials=False, connects=False
    )
    path = session_path(connection.url)
    try:
        path.unlink()
    except FileNotFoundError:
        out.print(f"no cached session for {connection.url}", highlight=False)
        return
    out.print(f"signed out of {connection.url} (removed {path})", highlight=False)


def register(app: typer.Typer) -> None:
    app.command("login")(login)
    app.command("logout")(logout)
