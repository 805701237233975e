"""``tasklease token inspect``: decode a token and check it against the broker's JWKS."""

from __future__ import annotations

import json
import sys
import time
from datetime import UTC, datetime
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table
from rich.tree import Tree

from tasklease.cli._common import (
    EXIT_CODES_HELP,
    EXIT_FAILED,
    JsonOpt,
    ProfileOpt,
    UrlOpt,
    broker_errors,
    fail,
    out,
    resolve_connection,
    selected_tenant,
)
from tasklease.rules.controls import escaped

__all__ = ["in_words", "register", "token_app"]

token_app = typer.Typer(help=f"Look inside tokens.\n\n{EXIT_CODES_HELP}", no_args_is_help=True)
_AGENT_TYP = "at+jwt"


def _span(duration: float) -> str:
    seconds = round(duration)
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60} s"
    if seconds < 86400:
        return f"{seconds // 3600} h {seconds % 3600 // 60} min"
    return f"{seconds // 86400} d {seconds % 86400 // 3600} h"


def _minus(a: float, b: float) -> float:
    """``a - b``, in whole seconds when one is an integer no float holds (a token's
    ``exp`` is any JSON integer: subtracted from the clock, it raised OverflowError)."""
    try:
        return a - b
    except OverflowError:
        return int(a) - int(b)


def in_words(exp: float, now: float) -> str:
    """``expires in 4 min 12 s`` or ``expired 3 min ago`` (coarser for old tokens)."""
    if exp > now:
        return f"expires in {_span(_minus(exp, now))}"
    ago = _minus(now, exp)
    if ago < 60:
        return f"expired {_span(ago)} ago"
    if ago < 3600:
        return f"expired {int(ago // 60)} min ago"
    return f"expired {_span(ago)} ago"


def _when(ts: Any) -> str:
    """A time claim as a UTC date, or as written when it is no number or no date a
    calendar holds (the token is whoever made it's: ``exp`` in the year three million)."""
    if not isinstance(ts, int | float):
        return str(ts)
    try:
        return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    except (OverflowError, OSError, ValueError):
        return "not a date"


def _check_signature(token: str, header: dict[str, Any], jwks: object) -> tuple[bool, str]:
    """Whether ``token``'s signature verifies with a key of ``jwks`` that the verifier
    would use: the JWK Set is read by its rule (:func:`tasklease.verify.parse_jwks`),
    never by one of our own, so "valid" here is never a token resource servers refuse."""
    from tasklease.rules import jws as _jws
    from tasklease.verify import parse_jwks

    try:
        keys = parse_jwks(jwks)
    except ValueError:
        return False, "invalid: the broker's answer is not a JWK Set"
    typ = header.get("typ")
    try:
        decoded = _jws.decode(
            token, resolve_key=keys.get, allowed_typs={typ} if isinstance(typ, str) else set()
        )
    except _jws.JWSError as exc:
        if exc.reason == "unknown kid":
            return False, f"unknown kid: the broker's JWKS ({len(keys)} usable keys) lacks it"
        return False, f"invalid: {exc.reason}"
    return True, f"valid (kid {decoded.kid})"


def _other_tenant(iss: object) -> str:
    """Why a key may be missing: the token's ``iss`` names another tenant than the one
    whose JWKS was read (``--tenant``); "" when it does not."""
    from tasklease.core.tenantids import TENANT_PATH_PREFIX, tenant_id_error

    if not isinstance(iss, str):
        return ""
    head, found, name = iss.rpartition(TENANT_PATH_PREFIX)
    named = name if found and head and tenant_id_error(name) is None else None
    if named == selected_tenant():
        return ""
    if named is None:
        return (
            "; its iss names no tenant (the default tenant's, or another broker's): "
            "without --tenant the default tenant's keys are read"
        )
    return f"; its iss names tenant {named}: inspect it with --tenant {named}"


def _chain_tree(payload: dict[str, Any]) -> Tree | None:
    chain = payload.get("delegation_chain")
    if not isinstance(chain, list) or not chain:
        return None
    tree = Tree("[bold]delegation chain[/] (root first)")
    node = tree
    for record in chain:
        if not isinstance(record, dict):
            continue
        scope = " ".join(record.get("scope") or [])
        node = node.add(
            f"{escape(str(record.get('agent')))}  [dim]scope {escape(scope)} · "
            f"delegated {escape(str(record.get('delegated_at')))}[/]"
        )
    held = payload.get("scope")
    holder_scope = held if isinstance(held, str) else " ".join(held or [])
    act = payload.get("act")
    holder = act.get("sub") if isinstance(act, dict) else payload.get("sub")
    node.add(f"[bold green]{escape(str(holder))}[/]  [dim]holds {escape(holder_scope)}[/]")
    return tree


@token_app.command("inspect")
def token_inspect(
    token: Annotated[str, typer.Argument(help="The token, or - to read it from stdin.")],
    as_json: JsonOpt = False,
    url: UrlOpt = None,
    profile: ProfileOpt = None,
    offline: Annotated[
        bool, typer.Option(help="Only decode: do not fetch the JWKS from a broker.")
    ] = False,
) -> None:
    """Decode a token, verify its signature with the broker's JWKS, show its chain.

    Exit 1 when the token is malformed or its signature does not verify.
    """
    from tasklease.rules import jws as _jws

    if token == "-":  # noqa: S105 - the conventional "read stdin" argument, not a secret
        token = sys.stdin.read().strip()
    token = token.removeprefix("Bearer ").strip()
    try:
        header, payload = _jws.decode_unverified(token)
    except _jws.JWSError as exc:
        fail(f"not a compact JWS: {exc.reason}", EXIT_FAILED)
    signature_ok: bool | None = None
    signature_text = "not checked (offline)"
    broker_valid: bool | None = None
    if not offline:
        from tasklease.client import AdminClient

        connection = resolve_connection(url, None, profile, need_secret=False, credentials=False)
        with (
            broker_errors(),
            AdminClient(
                connection.url,
                None,
                insecure_http=connection.insecure_http,
                verify=connection.verify,
            ) as client,
        ):
            signature_ok, signature_text = _check_signature(token, header, client.jwks())
            if not signature_ok and signature_text.startswith("unknown kid"):
                signature_text += _other_tenant(payload.get("iss"))
            if signature_ok and header.get("typ") == _AGENT_TYP:
                broker_valid = client.validate_token(token).get("valid") is True
    now = time.time()
    exp = payload.get("exp")
    expiry = in_words(exp, now) if isinstance(exp, int | float) else "no expiry"
    if as_json:
        print_pretty_json(
            {
                "header": header,
                "claims": payload,
                "signature_valid": signature_ok,
                "signature": signature_text,
                "broker_valid": broker_valid,
                "expiry": expiry,
            }
        )
    else:
        _show(header, payload, signature_ok, signature_text, broker_valid, expiry)
    if signature_ok is False:
        raise typer.Exit(EXIT_FAILED)


def print_pretty_json(document: dict[str, Any]) -> None:
    """One JSON document, indented for a person (``--json`` of ``token inspect``)."""
    # A token's claims are the issuer's text: controls escaped as JSON writes them.
    sys.stdout.write(escaped(json.dumps(document, indent=2, ensure_ascii=False)) + "\n")
    sys.stdout.flush()


def _show(
    header: dict[str, Any],
    payload: dict[str, Any],
    signature_ok: bool | None,
    signature_text: str,
    broker_valid: bool | None,
    expiry: str,
) -> None:
    mark = {True: "[green]", False: "[bold red]", None: "[yellow]"}[signature_ok]
    out.print(f"[bold]signature[/]  {mark}{escape(signature_text)}[/]", markup=True)
    if broker_valid is not None:
        verdict = (
            "[green]valid[/]" if broker_valid else "[bold red]not valid[/] (expired or revoked)"
        )
        out.print(f"[bold]broker[/]     {verdict}", markup=True)
    style = "red" if expiry.startswith("expired") else "default"
    out.print(f"[bold]expiry[/]     [{style}]{escape(expiry)}[/]", markup=True)
    out.print()
    head = Table("header", "value", show_header=True)
    for key, value in header.items():
        head.add_row(key, str(value))
    out.print(head)  # markup off: every cell as written
    claims = Table("claim", "value", show_header=True)
    for key, value in payload.items():
        if key == "delegation_chain":
            shown = f"{len(value)} hop(s), below" if isinstance(value, list) else str(value)
        elif key in ("exp", "iat", "nbf", "oiat"):
            shown = f"{value}  ({_when(value)})"
        elif isinstance(value, list):
            shown = " ".join(str(v) for v in value)
        else:
            shown = str(value)
        claims.add_row(key, shown)
    out.print(claims)
    tree = _chain_tree(payload)
    if tree is not None:
        out.print(tree, markup=True)  # the labels' values are escaped


def register(app: typer.Typer) -> None:
    app.add_typer(token_app, name="token")
