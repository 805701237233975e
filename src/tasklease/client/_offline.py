"""Offline attenuation in the SDK: hand on part of a credential without the broker.

An agent derives a chain from its token (:meth:`tasklease.client.Agent.attenuate`); the
delegate holds it with its own key as an :class:`OfflineCredential`, presents it to
resource servers (``Authorization: DPoP tla1~...`` with a fresh DPoP proof of its key)
and may attenuate it further. No call to the broker: the block is checked here by the
broker's own issuance rule (``tasklease.rules.chainverify.derive``), exactly as every
verifier checks it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Generator, Mapping, Sequence
from typing import Any

import httpx
import nacl.signing

from tasklease.client._brokerurl import check_request_url
from tasklease.client._errors import ScopeViolation, TaskleaseError
from tasklease.client._holder import DPoPKey
from tasklease.rules import attenuation
from tasklease.rules.chainverify import derive, offline_limits, root_claims_of, walk

__all__ = ["OfflineCredential", "attenuate"]

# The SDK does not know the broker's bounds: blocks are walked and derived with no bound
# of its own but the chain's and the format's; each verifier applies its limits.
_LIMITS = offline_limits(max_ttl=1 << 40, max_delegation_depth=64)


def attenuate(
    credential: str,
    key: nacl.signing.SigningKey,
    delegate_id: str,
    delegate_public_key: bytes,
    *,
    scope: Sequence[str] | None = None,
    authorization_details: Sequence[Mapping[str, Any]] | None = None,
    audience: str | None = None,
    ttl: int = 300,
    now: float | None = None,
) -> str:
    """``credential`` (a token or a chain whose current holder's key is ``key``) handed to
    ``delegate_id`` (its Ed25519 public key ``delegate_public_key``, 32 bytes) for ``ttl``
    seconds (never past the parent), with ``scope``, ``authorization_details`` and
    ``audience`` narrowed (None keeps the parent's). Returns the chain (``tla1~...``).

    ``delegate_id`` is a label (``"helper"``, or segments ``"helper/2"``), named under the
    current holder's SPIFFE ID (``<holder>/helper``), or a full name already nested under
    it: a delegate never takes another agent's name (docs/formats.md, ``sub``).

    Raises:
        ValueError: ``delegate_id`` is neither a label nor a name nested under the
            holder's (nothing is signed).
        ScopeViolation: the block would widen the parent, or the chain is too deep.
        TaskleaseError: code ``invalid_chain``: a malformed credential, another key than
            the holder's, or a chain over the size cap.
    """
    try:
        holder = _holder(credential)
    except attenuation.ChainError as exc:
        raise TaskleaseError(exc.reason, code="invalid_chain") from None
    delegate = attenuation.delegate_name(holder, delegate_id)  # ValueError before signing
    try:
        return derive(
            credential,
            key,
            delegate=delegate,
            delegate_key=bytes(delegate_public_key),
            now=int(time.time() if now is None else now),
            ttl=ttl,
            scope=scope,
            grants=authorization_details,
            audience=audience,
            limits=_LIMITS,
        )
    except attenuation.ChainError as exc:
        if exc.category in ("attenuation", "depth"):
            raise ScopeViolation(exc.reason) from None
        raise TaskleaseError(exc.reason, code="invalid_chain") from None


def _holder(credential: str) -> str:
    """The name of ``credential``'s current holder as written (the last block's ``sub``,
    or the root token's): :func:`derive` checks the rest, signatures included."""
    decoded = attenuation.decode(
        credential if attenuation.is_chain(credential) else attenuation.PREFIX + credential
    )
    if decoded.blocks:
        return decoded.blocks[-1].sub
    return root_claims_of(decoded.root_claims, decoded.root).sub


class _ChainAuth(httpx.Auth):
    """Presents the chain with a fresh proof; never on a request over plain HTTP beyond
    loopback without the credential's ``insecure_http`` (``_brokerurl``)."""

    def __init__(self, credential: OfflineCredential) -> None:
        self._credential = credential

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        check_request_url(request.url, self._credential._insecure_http)
        request.headers.update(self._credential.headers(request.method, str(request.url)))
        yield request


class OfflineCredential:
    """An offline chain received by its last delegate, with that delegate's key.

    ``chain`` is the ``tla1~...`` text; ``key`` the delegate's Ed25519 signing key (the
    block's ``key`` must be its public key). ``clock`` dates DPoP proofs.
    ``insecure_http``: whether :attr:`auth` may present the chain over plain HTTP beyond
    loopback (True), never (False), or as ``TASKLEASE_INSECURE_HTTP`` says (None).

    Raises:
        TaskleaseError: code ``invalid_chain`` when the chain is malformed, its blocks do
            not verify, or ``key`` is not its last delegate's.
    """

    def __init__(
        self,
        chain: str,
        key: nacl.signing.SigningKey,
        *,
        clock: Callable[[], float] = time.time,
        insecure_http: bool | None = None,
    ) -> None:
        try:
            decoded = attenuation.decode(chain)
            root = root_claims_of(decoded.root_claims, decoded.root)
            _, _, steps = walk(decoded, root, limits=_LIMITS)
        except attenuation.ChainError as exc:
            raise TaskleaseError(exc.reason, code="invalid_chain") from None
        if not steps or steps[-1].block.key != bytes(key.verify_key):
            raise TaskleaseError(
                "the key is not this chain's last delegate's", code="invalid_chain"
            )
        self.chain = chain
        self._key = key
        self._insecure_http = insecure_http
        self._clock = clock
        self._dpop = DPoPKey(key, clock=clock)
        leaf = steps[-1]
        self.holder: str = leaf.block.sub
        self.exp: int = leaf.block.exp
        self.scope: tuple[str, ...] = leaf.child.scope
        self.authorization_details: tuple[Mapping[str, Any], ...] = leaf.child.details
        self.audience: tuple[str, ...] = leaf.child.audience
        self.depth: int = leaf.block.depth

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
        """Hand part of this chain on (as :func:`attenuate`): one more block, signed with
        this holder's key, naming the delegate under :attr:`holder` (a label, or a full
        name starting with ``holder + "/"``)."""
        return attenuate(
            self.chain,
            self._key,
            delegate_id,
            delegate_public_key,
            scope=scope,
            authorization_details=authorization_details,
            audience=audience,
            ttl=ttl,
            now=self._clock(),
        )

    def headers(self, method: str, url: str) -> dict[str, str]:
        """The headers presenting the chain on ``method`` ``url``: ``Authorization: DPoP``
        and a fresh, single-use DPoP proof of this holder's key over the chain."""
        return {
            "Authorization": f"DPoP {self.chain}",
            "DPoP": self._dpop.proof(method, url, self.chain),
        }

    @property
    def auth(self) -> httpx.Auth:
        """An ``httpx.Auth`` presenting the chain on every request (a fresh proof each):
        over ``https://``, or ``http://`` to a loopback host; to any other ``http://`` URL
        only with ``insecure_http`` (or ``TASKLEASE_INSECURE_HTTP=1``), then with an
        ``InsecureHTTPWarning`` once per server.

        Raises (from the request call): InsecureHTTP for such a URL without the opt-in,
        before the chain is attached or anything sent.
        """
        return _ChainAuth(self)

    @property
    def expired(self) -> bool:
        """Whether the chain's last block is past its ``exp`` (it then verifies nowhere)."""
        return self._clock() >= self.exp

    def __repr__(self) -> str:
        return f"OfflineCredential(holder={self.holder!r}, depth={self.depth}, exp={self.exp})"
