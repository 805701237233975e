"""Structured grants at the resource server: is this call within the token's grants, and
counting a grant's calls at the broker.

    token = verifier.verify(bearer)
    grant = require_grant(token, "resource_access", action="pay",
                          location="https://pay.example/payees/P", amount="80",
                          currency="EUR", values={"payee": "P"})
    if has_max_calls(grant):
        verifier.count_call(bearer, "resource_access", action="pay", ...)

The rules are the broker's (``tasklease.rules.grants``): every argument given must be
allowed; a grant with ``max_amount`` allows only a call that states its amount, one with
``allowed_values`` only a call that gives each named field, one with a time window only
calls inside it. ``max_calls`` is counted by the broker (``POST /v1/token/calls``), which
also counts the calls of every grant it was narrowed from.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import httpx

from tasklease.bounds import bounded_body, json_document
from tasklease.rules.binding import Presentation
from tasklease.rules.grantuse import CALL_MEMBERS
from tasklease.verify._claims import VerifiedToken
from tasklease.verify._errors import InsufficientScope, InvalidToken, VerifierUnavailable

__all__ = ["CallCount", "count_call", "has_max_calls", "require_grant"]

# A count or a refusal's problem detail is a few hundred bytes; either is read off the
# wire, uncompressed, at most this much (bounds.bounded_body).
MAX_ANSWER_BYTES = 65536

CALL_ARGS = frozenset(CALL_MEMBERS)


def require_grant(
    token: VerifiedToken, kind: str, *, now: float | None = None, **call: Any
) -> Mapping[str, Any]:
    """The token's grant of type ``kind`` that allows ``call`` (the arguments of
    :meth:`VerifiedToken.allows`), or raise.

    Raises:
        InsufficientScope: no grant allows it (403: the token is valid, it only lacks the
            authority); ``required`` is ``grant:<kind>``.
        InvalidToken: the token's ``authorization_details`` claim is malformed.
    """
    unknown = set(call) - CALL_ARGS
    if unknown:
        raise TypeError(f"unknown call arguments: {', '.join(sorted(unknown))}")
    grant = token.allows(kind, now=now, **call)
    if grant is None:
        raise InsufficientScope(f"no {kind} grant allows this call", required=f"grant:{kind}")
    return grant


def has_max_calls(grant: Mapping[str, Any]) -> bool:
    """True when ``grant`` limits its calls (``limits.max_calls``): count each at the broker."""
    limits = grant.get("limits")
    return isinstance(limits, Mapping) and "max_calls" in limits


@dataclass(frozen=True, slots=True)
class CallCount:
    """The broker's answer to a count: ``counted`` (False: a grant without ``max_calls``
    allowed it), and the calls ``remaining`` of ``max_calls`` (None when not counted)."""

    counted: bool
    remaining: int | None
    max_calls: int | None


def count_call(
    client: httpx.Client,
    token: str,
    kind: str,
    *,
    audience: str,
    presented: Presentation | None,
    call: Mapping[str, Any],
    token_source: Callable[[], str] | None = None,
    forget_token: Callable[[], None] | None = None,
) -> CallCount:
    """``POST /v1/token/calls``: count one call of ``token``'s grant of type ``kind`` that
    allows ``call``, as the resource ``audience``.

    ``token_source`` returns this resource server's own admin or app bearer token (the
    verifier's credentials), sent in ``Authorization``: the broker counts a call of a
    certificate-bound token only for an authenticated resource server, since the
    thumbprint forwarded is only this server's word. A 401 drops the cached token
    (``forget_token``), so that the next count signs in again.

    Raises:
        InsufficientScope: no grant allows the call, or its calls (or a delegator's) are
            used up.
        InvalidToken: the broker refused the token.
        VerifierUnavailable: the broker could not be asked, or its answer not read (not
            a count, compressed, or larger than :data:`MAX_ANSWER_BYTES`): fail closed.
    """
    unknown = set(call) - CALL_ARGS
    if unknown:
        raise TypeError(f"unknown call arguments: {', '.join(sorted(unknown))}")
    body: dict[str, Any] = {"token": token, "type": kind, "audience": audience}
    body.update({k: v for k, v in call.items() if v is not None})
    if "amount" in body and not isinstance(body["amount"], str | int):
        body["amount"] = str(body["amount"])
    if presented is not None:
        if presented.cert_thumbprint:
            body["client_cert_thumbprint"] = presented.cert_thumbprint
        if presented.dpop_proof:
            body.update(dpop=presented.dpop_proof, htm=presented.htm, htu=presented.htu)
    headers = {"accept-encoding": "identity"}
    if token_source is not None:
        try:
            headers["Authorization"] = f"Bearer {token_source()}"
        except (httpx.HTTPError, VerifierUnavailable, RuntimeError) as exc:
            raise VerifierUnavailable(
                f"counting the call failed: no credential: {type(exc).__name__}"
            ) from None
    try:
        with client.stream("POST", "/v1/token/calls", json=body, headers=headers) as response:
            status = response.status_code
            if status not in (200, 400, 401, 403):
                raise VerifierUnavailable(f"counting the call failed: HTTP {status}")
            try:
                answer = bounded_body(response, MAX_ANSWER_BYTES)
            except ValueError as exc:
                if status == 200:
                    raise VerifierUnavailable(f"counting the call failed: {exc}") from None
                answer = b""  # a refusal's detail is only for the logs
    except httpx.HTTPError as exc:
        raise VerifierUnavailable(f"counting the call failed: {type(exc).__name__}") from None
    if status == 200:
        return _call_count(answer)
    detail = _problem_detail(status, answer)
    if status == 401 and forget_token is not None:
        forget_token()  # perhaps ours that was refused: signed in again next time
    if status == 403:
        raise InsufficientScope(f"broker refused the call: {detail}", required=f"grant:{kind}")
    raise InvalidToken(f"broker refused the token: {detail}")


def _call_count(answer: bytes) -> CallCount:
    """The broker's 200 answer, or :class:`VerifierUnavailable` when it is not one: a call
    is never let through on an answer that cannot be read."""
    try:
        document = json_document(answer)
    except ValueError:
        raise VerifierUnavailable("counting the call failed: the answer is not JSON") from None
    if type(document) is not dict:
        raise VerifierUnavailable("counting the call failed: the answer is not an object")
    counted = document.get("counted")
    remaining, max_calls = document.get("remaining"), document.get("max_calls")
    if type(counted) is not bool or not all(
        value is None or type(value) is int for value in (remaining, max_calls)
    ):
        raise VerifierUnavailable("counting the call failed: a malformed answer")
    return CallCount(counted, remaining, max_calls)


def _problem_detail(status: int, answer: bytes) -> str:
    try:
        body = json_document(answer)
    except ValueError:
        return f"HTTP {status}"
    if not isinstance(body, dict):
        return f"HTTP {status}"
    return f"{body.get('detail', '')} (denial_id={body.get('denial_id', '-')})"[:300]
