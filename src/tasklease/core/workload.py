"""Workload Identity Tokens (WIMSE, draft-ietf-wimse-workload-creds-02 section 4.1).

An agent holding a valid token asks for a WIT: the broker's statement that the agent (its
SPIFFE ID, the token's holder) holds the Ed25519 key it registered. Peers verify the WIT
with the broker's JWKS and the agent's per-request Workload Proof Tokens with the key in
it (``tasklease.rules.wimse``), without calling the broker. A WIT carries no authority (no
scope): what the agent may do is its access token's, which travels beside it and is
bound to the proof by ``ath``. It lives no longer than the token it was asked with, is
issued only to a holder in good standing (``Kernel.holder_standing``, as renewal and
delegation ask), and its issuance is audited.
"""

from __future__ import annotations

import json
from dataclasses import replace

from tasklease.core.callers import about, require_agent
from tasklease.core.errors import Forbidden
from tasklease.core.kernel import Kernel, RequestContext, Service
from tasklease.core.signing import SigningKeys
from tasklease.core.tokens import Claims, agent_key_of, new_jti
from tasklease.rules.wimse import WIT_TYPE, wit_claims

__all__ = ["WorkloadIdentities"]


class WorkloadIdentities(Service):
    """Issues WITs to agents. Thread-safe; one per broker."""

    def __init__(self, kernel: Kernel, keys: SigningKeys) -> None:
        super().__init__(kernel)
        self._keys = keys

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
        jti = new_jti()
        payload = wit_claims(
            issuer=self._config.issuer,
            subject=claims.sub,
            public_key=key,
            iat=iat,
            exp=claims.exp,
            jti=jti,
        )
        wit = self._keys.ring.sign(json.dumps(payload, separators=(",", ":")).encode(), WIT_TYPE)
        kernel.record(
            replace(
                about(claims),
                event_type="workload_identity_issued",
                request_id=ctx.request_id,
                detail=f"WIT issued jti={jti} exp={claims.exp} for token jti={claims.jti}",
            )
        )
        return wit, max(0, claims.exp - iat)
