"""By-reference tokens: resolved through the broker's RFC 7662 introspection endpoint.

When a signed token would exceed the broker's size threshold (long delegation chains, many
scopes) the broker issues an opaque token instead: ``tlr_`` and 43 base64url characters
(``tasklease.core.introspection``, which needs the server's dependencies). Such a token
cannot be verified offline; the verifier asks ``POST /v1/introspect`` with its own admin or
app credential and gets the token's claims with ``active: true``, or ``{"active": false}``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any, Protocol

import httpx

from tasklease.bounds import bounded_body, json_document
from tasklease.verify._errors import VerifierUnavailable

__all__ = ["REFERENCE_CHARS", "BrokerIntrospector", "TokenIntrospector", "is_reference_token"]

_REFERENCE = re.compile(r"tlr_[A-Za-z0-9_-]{43}")
REFERENCE_CHARS = 47  # the length of every by-reference token (tlr_ and 43 characters)
MAX_RESPONSE_BYTES = 65536


def is_reference_token(token: str) -> bool:
    """True for strings shaped like a by-reference token (checked before any lookup)."""
    return (
        len(token) == REFERENCE_CHARS
        and token.startswith("tlr_")
        and _REFERENCE.fullmatch(token) is not None
    )


class TokenIntrospector(Protocol):
    """Resolves a by-reference token (RFC 7662); plug in another to change the transport.

    ``introspect`` returns the introspection response (``{"active": true, ...claims}`` or
    ``{"active": false}``; ``None`` counts as inactive) or raises
    :class:`~tasklease.verify.VerifierUnavailable` when it cannot tell. The verifier then
    applies the same claim checks as to a JWT, and caches active answers no longer than
    the token's ``exp`` (and drops them on a matching revocation from the feed).
    """

    def introspect(self, token: str) -> Mapping[str, Any] | None:
        """The RFC 7662 answer for ``token``, or None (inactive); raises
        :class:`~tasklease.verify.VerifierUnavailable` when it cannot tell."""
        ...


class BrokerIntrospector:
    """The default :class:`TokenIntrospector`: ``POST /v1/introspect`` at the broker.

    ``token_source`` returns an admin or app bearer token (the verifier's credentials);
    ``forget_token`` drops a cached one after a 401, and the call is retried once. The
    ``audience`` is sent too, so the broker also answers inactive for another resource.
    Note that an app credential only sees tokens of its own app's agents. The answer is
    read uncompressed, at most :data:`MAX_RESPONSE_BYTES`: a larger or compressed one is
    :class:`~tasklease.verify.VerifierUnavailable`.
    """

    def __init__(
        self,
        client: httpx.Client,
        *,
        audience: str,
        token_source: Callable[[], str],
        forget_token: Callable[[], None],
    ) -> None:
        self._client = client
        self._audience = audience
        self._token_source = token_source
        self._forget_token = forget_token
        self.calls = 0

    def introspect(self, token: str) -> Mapping[str, Any] | None:
        """Ask the broker (``POST /v1/introspect``); a 401 drops the cached credential
        token and asks once more. Raises VerifierUnavailable when it cannot tell."""
        for attempt in range(2):
            self.calls += 1
            try:
                status, answer = self._ask(token)
            except (httpx.HTTPError, KeyError, ValueError, RuntimeError) as exc:
                raise VerifierUnavailable(f"introspection failed: {exc}") from None
            if status == 401 and attempt == 0:
                self._forget_token()
                continue
            if status != 200:
                raise VerifierUnavailable(f"introspection answered {status}")
            try:
                body = json_document(answer)
            except ValueError:
                raise VerifierUnavailable("introspection response is not JSON") from None
            return body if isinstance(body, dict) else None
        raise VerifierUnavailable("introspection refused our credentials")

    def _ask(self, token: str) -> tuple[int, bytes]:
        """The status of one ``POST /v1/introspect``, and for a 200 its body: read
        uncompressed, off the wire, at most :data:`MAX_RESPONSE_BYTES` (other bodies are
        not read)."""
        bearer = self._token_source()
        with self._client.stream(
            "POST",
            "/v1/introspect",
            data={"token": token, "audience": self._audience},
            headers={
                "Authorization": f"Bearer {bearer}",
                "Accept": "application/json",
                "Accept-Encoding": "identity",
            },
        ) as response:
            if response.status_code != 200:
                return response.status_code, b""
            try:
                return 200, bounded_body(response, MAX_RESPONSE_BYTES)
            except ValueError as exc:
                raise VerifierUnavailable(f"introspection response refused: {exc}") from None
