"""A token verifier for the ``mcp`` Python SDK's resource servers.

    verifier = Verifier(broker_url, audience="https://tools.example/mcp", credentials=...)
    server = MCPServer("tools", token_verifier=TaskleaseTokenVerifier(verifier),
                       auth=auth_settings(broker_url, "https://tools.example/mcp"))

The MCP authorization spec makes MCP servers OAuth resource servers that MUST accept only
tokens issued for themselves (audience, RFC 8707) and never pass tokens through: the
verifier's audience is the server's resource URL, so a token minted for another resource
is refused (``verify_token`` answers ``None``, which the SDK turns into a 401). A stale
revocation feed also answers ``None``: fail closed.

A tool that needs a structured grant (docs/grants.md) asks for it with
:func:`require_tool_grant` (its ``max_calls`` counted at the broker)::

    @server.tool()
    async def pay(payee: str, amount: str) -> str:
        await require_tool_grant(verifier, "resource_access", action="pay",
                                 location=f"https://pay.example/payees/{payee}",
                                 amount=amount, currency="EUR", values={"payee": payee})
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from mcp.server.auth.middleware.auth_context import get_access_token
from mcp.server.auth.provider import AccessToken
from mcp.server.auth.settings import AuthSettings

from tasklease.verify._claims import parse_claims
from tasklease.verify._errors import InvalidToken, VerificationError
from tasklease.verify._grants import has_max_calls, require_grant
from tasklease.verify._verifier import Verifier

__all__ = ["TaskleaseTokenVerifier", "auth_settings", "require_tool_grant"]

_log = logging.getLogger("tasklease.verify")


class TaskleaseTokenVerifier:
    """Implements ``mcp.server.auth.provider.TokenVerifier`` with a :class:`Verifier`."""

    def __init__(self, verifier: Verifier) -> None:
        self.verifier = verifier

    async def verify_token(self, token: str) -> AccessToken | None:
        """The ``AccessToken`` for a bearer ``token`` this server accepts, or None (the
        SDK answers 401): refused, for another resource, or the feed stale. Starts the
        verifier on first use."""
        if not self.verifier.started:
            await self.verifier.astart()
        try:
            verified = await self.verifier.averify(token)
        except VerificationError as exc:
            _log.debug("MCP bearer token refused: %s", exc.reason)
            return None
        return AccessToken(
            token=token,
            client_id=verified.client_id,
            scopes=list(verified.scope),
            expires_at=verified.exp,
            resource=self.verifier.audience,
            subject=verified.sub,
            claims=dict(verified.claims),
        )


def auth_settings(
    broker_url: str,
    resource_url: str,
    *,
    required_scopes: list[str] | None = None,
    issuer: str | None = None,
) -> AuthSettings:
    """``AuthSettings`` for an MCP server that is a resource server of this broker.

    ``resource_url`` must equal the verifier's audience; the SDK then also refuses tokens
    reported for another resource (``validate_token_resource``). The authorization
    server advertised is ``issuer`` (default ``broker_url``): it must be the ``iss`` of
    the broker's tokens (RFC 8414 section 3.3, RFC 9068 section 4), which is the
    broker's first ``public_url`` unless its ``issuer`` is set otherwise.
    """
    return AuthSettings(
        issuer_url=issuer or broker_url,  # type: ignore[arg-type]  # pydantic validates it
        resource_server_url=resource_url,  # type: ignore[arg-type]
        required_scopes=required_scopes,
        validate_token_resource=True,
    )


async def require_tool_grant(verifier: Verifier, kind: str, **call: Any) -> Mapping[str, Any]:
    """Inside an MCP tool: the grant of the request's token (``get_access_token``) of type
    ``kind`` that allows ``call`` (``VerifiedToken.allows``'s arguments); its call is
    counted at the broker when it carries ``max_calls``.

    Raises:
        InsufficientScope: no grant allows the call, or its calls are used up.
        InvalidToken: the request carries no token verified by :class:`TaskleaseTokenVerifier`.
    """
    access = get_access_token()
    if access is None or not access.claims:
        raise InvalidToken("no verified token in this request")
    token = parse_claims(dict(access.claims))
    grant = require_grant(token, kind, **call)
    if has_max_calls(grant):
        await verifier.acount_call(access.token, kind, **call)
    return grant
