"""Workload Identity Tokens (WIMSE, draft-ietf-wimse-workload-creds-02 section 4.1).

An agent holding a valid token asks for a WIT: the broker's statement that the agent (its
SPIFFE ID, the token's holder) holds the Ed25519 key it registered. Peers verify the WIT
with the broker's JWKS and the agent's per-request Workload Proof Tokens with the key in
it (``tasklease.rules.wimse``), without calling the broker. A WIT carries no authority (no
scope): what the agent may do is its access token's, which travels beside it and is
bound to the proof by ``ath``. It lives no longer than the token it was asked with, is
issued only to a holder in good standing (``Kernel.holder_standing``, as renewal and
delegation ask), and its issuance is audited.

One token gets one WIT: asked again with the same token (checked and in good standing
each time), a process answers the WIT it issued for it, under the event it wrote then,
rather than a new WIT and a new permanent event each call (an agent asking in a loop
would fill the audit log). Every WIT issued has its one event; the events of a token's
WITs are bounded by the processes that serve it (each remembers its own, at most
:data:`MAX_REMEMBERED`), as its tokens are by their own audited issuance. A WIT is issued
again once the broker signs with another key (the one it was signed with may be retired).
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from dataclasses import dataclass, replace

from tasklease.core.callers import about, require_agent
from tasklease.core.errors import Forbidden
from tasklease.core.kernel import Kernel, RequestContext, Service
from tasklease.core.signing import SigningKeys
from tasklease.core.tokens import Claims, agent_key_of, new_jti
from tasklease.rules.wimse import WIT_TYPE, wit_claims

__all__ = ["MAX_REMEMBERED", "WorkloadIdentities"]

MAX_REMEMBERED = 65_536
"""Most WITs a process remembers for their tokens (the least recently issued forgotten
first, and any whose token has expired)."""


@dataclass(frozen=True, slots=True)
class _Issued:
    wit: str
    exp: int
    kid: str


class WorkloadIdentities(Service):
    """Issues WITs to agents. Thread-safe; one per broker."""

    def __init__(self, kernel: Kernel, keys: SigningKeys) -> None:
        super().__init__(kernel)
        self._keys = keys
        self._lock = threading.Lock()
        # (agent, token jti) -> the WIT issued for that token, oldest first.
        self._issued: OrderedDict[tuple[str, str], _Issued] = OrderedDict()

    def issue(self, claims: Claims, ctx: RequestContext) -> tuple[str, int]:
        """A WIT for the holder of ``claims`` (an agent token); ``(wit, expires_in)``.

        ``sub`` is the holder's SPIFFE ID, ``cnf.jwk`` its registered key (the one its
        token names in ``agent_jwk``), ``exp`` the token's own.

        Raises:
            Forbidden: not an agent token, one that names no registered key, or its holder
                is in no good standing (declared itself done, swept): audited.
        """
        kernel = self._kernel
        require_agent(kernel, claims, "workload_identity", ctx)
        key = agent_key_of(claims.raw)
        why = "token without agent_jwk" if key is None else kernel.holder_standing(claims)
        if key is None or why:
            raise kernel.deny(
                Forbidden(
                    "the token names no registered key"
                    if key is None
                    else "the token's holder is not in good standing"
                ),
                replace(
                    about(claims),
                    event_type="workload_identity_denied",
                    outcome="denied",
                    request_id=ctx.request_id,
                    detail=f"{why} | jti={claims.jti}",
                ),
            )
        iat = int(kernel.now())
        ring = self._keys.ring
        held = self._remembered((claims.sub, claims.jti), ring.active_kid, iat)
        if held is not None:
            return held.wit, max(0, held.exp - iat)
        jti = new_jti()
        payload = wit_claims(
            issuer=self._config.issuer,
            subject=claims.sub,
            public_key=key,
            iat=iat,
            exp=claims.exp,
            jti=jti,
        )
        wit = ring.sign(json.dumps(payload, separators=(",", ":")).encode(), WIT_TYPE)
        kernel.record(
            replace(
                about(claims),
                event_type="workload_identity_issued",
                request_id=ctx.request_id,
                detail=f"WIT issued jti={jti} exp={claims.exp} for token jti={claims.jti}",
            )
        )
        self._remember((claims.sub, claims.jti), _Issued(wit, claims.exp, ring.active_kid), iat)
        return wit, max(0, claims.exp - iat)

    def _remembered(self, key: tuple[str, str], kid: str, now: int) -> _Issued | None:
        """The WIT issued for the token ``key`` names, while it lives and is signed by the
        active key ``kid``; else None (a new one is issued)."""
        with self._lock:
            held = self._issued.get(key)
            if held is None or held.exp <= now or held.kid != kid:
                return None
            return held

    def _remember(self, key: tuple[str, str], issued: _Issued, now: int) -> None:
        with self._lock:
            table = self._issued
            table[key] = issued
            table.move_to_end(key)
            # The oldest first: expired ones, then any over the bound.
            while table and (len(table) > MAX_REMEMBERED or next(iter(table.values())).exp <= now):
                table.popitem(last=False)
