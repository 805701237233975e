"""What Agent and AsyncAgent share: the current credential's state and request headers,
and the offline operations (attenuation, offline peer authentication)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import nacl.signing

from tasklease.client._errors import TaskleaseError
from tasklease.client._flows import Credential
from tasklease.client._offline import attenuate
from tasklease.client._peer import OfflinePeerAuth, PeerToken
from tasklease.client._transport import auth_headers

__all__ = ["AgentBase"]


class AgentBase:
    """The synchronous part of :class:`~tasklease.client.Agent` and
    :class:`~tasklease.client.AsyncAgent`: no I/O, so the same code for both."""

    _credential: Credential
    _key: nacl.signing.SigningKey | None

    @property
    def agent_id(self) -> str:
        """The agent's SPIFFE ID."""
        return self._credential.agent_id

    @property
    def token(self) -> str:
        """The current access token (changes on every renewal)."""
        return self._credential.token

    @property
    def expires_at(self) -> float:
        """When the current token expires, in seconds since the epoch (per ``clock``)."""
        return self._credential.expires_at

    @property
    def scope(self) -> tuple[str, ...]:
        """The scope the agent asked for at registration (or resumption)."""
        return self._credential.scope

    @property
    def bearer_header(self) -> dict[str, str]:
        """``{"Authorization": "Bearer <current token>"}``; does not renew (``auth`` does).

        Not enough for a DPoP-bound agent: use :attr:`auth` or :meth:`auth_headers`.
        """
        return {"Authorization": f"Bearer {self._credential.token}"}

    @property
    def dpop_key(self) -> nacl.signing.SigningKey | None:
        """The DPoP key the token is bound to (keep it to :meth:`resume`), or None."""
        dpop = self._credential.dpop
        return dpop.key if dpop is not None else None

    def auth_headers(self, method: str, url: str) -> dict[str, str]:
        """The headers that present the current token on one ``method`` ``url`` request:
        ``Authorization: Bearer``, or ``Authorization: DPoP`` and a fresh ``DPoP`` proof
        for a DPoP-bound agent. Does not renew."""
        return auth_headers(self._credential.dpop, self._credential.token, method, url)

    def _signing_key(self) -> nacl.signing.SigningKey:
        if self._key is None:
            raise TaskleaseError("this agent was built without its signing key", code="no_key")
        return self._key

    def attenuate(
        self,
        delegate_id: str,
        delegate_public_key: bytes,
        *,
        scope: Sequence[str] | None = None,
        authorization_details: Sequence[Mapping[str, Any]] | None = None,
        audience: str | None = None,
        ttl: int = 300,
    ) -> str:
        """Hand part of this agent's current token to ``delegate_id`` offline, with no
        call to the broker: a chain (``tla1~...``) with one block signed by this agent's
        registered key, naming the delegate's Ed25519 public key (32 bytes). The delegate
        is named under this agent's id: pass a label (``"helper"`` names
        ``<agent_id>/helper``) or a full name starting with ``agent_id + "/"``. ``scope``,
        ``authorization_details`` and ``audience`` narrow (None keeps this agent's);
        the block lives ``ttl`` seconds, never past this token. The delegate presents it
        as an :class:`~tasklease.client.OfflineCredential` (docs/formats.md).

        Raises:
            ValueError: ``delegate_id`` is neither a label nor nested under this agent's id.
            ScopeViolation: the block would widen this agent's authority.
            TaskleaseError: code ``no_key`` without this agent's signing key;
                ``invalid_chain`` for a chain over the size cap.
        """
        return attenuate(
            self.token,
            self._signing_key(),
            delegate_id,
            delegate_public_key,
            scope=scope,
            authorization_details=authorization_details,
            audience=audience,
            ttl=ttl,
            now=self._credential.clock.now(),
        )

    def offline_peer(self, check: Callable[[str], PeerToken], **options: Any) -> OfflinePeerAuth:
        """This agent's side of offline peer mutual authentication: no broker round trip.

        ``check`` verifies the peer's token offline: pass a ``tasklease.verify.Verifier``'s
        ``verify_peer`` (cached JWKS, the revocation feed, the staleness bound).
        ``options`` go to :class:`~tasklease.client.OfflinePeerAuth` (``window``,
        ``clock``, ``replay``, ``holder_quota``, ``challenge_key``,
        ``show_bearer_token``). This agent presents its current token (not renewed here).

        As responder it answers only with a sender-constrained token: register the agent
        with ``dpop=True`` or a client certificate (``cert``), or pass
        ``show_bearer_token=True`` where every peer that can reach it is trusted. Whether
        an opaque (by-reference) token is bound is what this agent knows of its binding
        (its DPoP key, its ``cert``); with a ``client`` of your own that presents a
        certificate, say so with ``opaque_token_bound``.
        The online :meth:`handshake` stays for high-assurance cases
        (docs/broker-optional.md).
        """
        options.setdefault("opaque_token_bound", self._credential.holder_bound)
        return OfflinePeerAuth(
            self.agent_id, lambda: self.token, self._signing_key(), check, **options
        )
