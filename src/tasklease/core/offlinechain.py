"""The broker's view of an offline attenuation chain: verified by the shared rules with the
broker's keys, limits and revocation index, and its leaf read as the broker's Claims.

The rules are :mod:`tasklease.rules.chainverify`'s, the very ones ``tasklease.verify``
applies at a resource server, so the broker and every verifier agree on what a chain is
worth (docs/broker-optional.md). Nothing here re-implements a rule: this module only
supplies the broker's inputs (its keys by ``kid``, its issuer and audiences, its clock
and skew, its limits, its revocation index) and translates the outcome.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import replace

import nacl.signing

from tasklease.core.callers import Lineage
from tasklease.core.config import Config
from tasklease.core.delegation import principal_ref
from tasklease.core.revocation import RevocationIndex
from tasklease.core.store import Store
from tasklease.core.tokens import KIND_AGENT, Claims, ClaimsError, claims_from_payload
from tasklease.core.validation import TokenRejected
from tasklease.rules import attenuation
from tasklease.rules.binding import DPoPVerifier, Presentation
from tasklease.rules.chainverify import RevocationProbe, VerifiedChain, verify_chain
from tasklease.rules.issuance import IssuanceLimits

__all__ = [
    "KIND_OFFLINE",
    "OfflineChains",
    "chain_lineage",
    "is_chain",
    "leaf_claims",
    "live_denial",
    "offline_root",
]

# The kind a route names to accept an offline-derived credential (never in a JWT ``typ``).
KIND_OFFLINE = "tasklease-offline-chain"


def is_chain(text: str) -> bool:
    """True for an offline attenuation chain (``tla1~...``), False for a JWT or reference."""
    return attenuation.is_chain(text)


class OfflineChains:
    """Verifies offline chains for one broker. Thread-safe (holds no mutable state)."""

    def __init__(
        self,
        config: Config,
        resolve_key: Callable[[str], nacl.signing.VerifyKey | None],
        now: Callable[[], float],
        revocations: RevocationIndex,
    ) -> None:
        self._config = config
        self._resolve = resolve_key
        self._now = now
        self._revocations = revocations
        self._limits = IssuanceLimits.of(config)

    def verify(
        self,
        text: str,
        *,
        presented: Presentation | None,
        dpop: DPoPVerifier | None,
        audience: str | None = None,
        any_audience: bool = False,
    ) -> tuple[Claims, VerifiedChain]:
        """A chain presented as a credential, now: every signature, attenuation, expiry,
        depth, the presenter's proof of the leaf key (``presented``; None for
        introspection, which reports the binding and does not check it), and every jti
        and agent in the chain against the revocation index. Returns the leaf's claims
        and the verified chain.

        ``audience``/``any_audience`` as :meth:`~tasklease.core.validation.Validator.validate`.
        Raises :class:`TokenRejected` (the precise reason inward only).
        """
        cfg = self._config
        if audience is not None:
            audiences: Collection[str] | None = (audience,)
        else:
            audiences = None if any_audience else cfg.audience
        chain = self._verify(
            text,
            now=self._now(),
            audiences=audiences,
            presented=presented,
            dpop=dpop,
            revoked=self._revocations.match,
        )
        return leaf_claims(chain), chain

    def verify_record(self, text: str, *, as_of: float) -> VerifiedChain:
        """A chain reported as the record of what happened at ``as_of`` (a late audit
        report): signatures, attenuation, expiry and depth as of then, any audience; the
        presenter's binding and today's revocations are not the question (the caller
        notes the revocations). Raises :class:`TokenRejected`."""
        return self._verify(
            text, now=as_of, audiences=None, presented=None, dpop=None, revoked=None
        )

    def _verify(
        self,
        text: str,
        *,
        now: float,
        audiences: Collection[str] | None,
        presented: Presentation | None,
        dpop: DPoPVerifier | None,
        revoked: Callable[[RevocationProbe], str | None] | None,
    ) -> VerifiedChain:
        cfg = self._config
        try:
            return verify_chain(
                text,
                resolve_key=self._resolve,
                issuer=cfg.issuer,
                audiences=audiences,
                now=now,
                limits=self._limits,
                skew=cfg.clock_skew,
                max_lifetime=cfg.max_ttl,
                presented=presented,
                dpop=dpop,
                revoked=revoked,
                # Operators' grant types narrow only to identical grants here, as at a
                # verifier that does not know their rules: both sides agree on a chain.
                rules=None,
            )
        except attenuation.ChainError as exc:
            raise TokenRejected(f"offline chain: {exc.reason}", exc.category) from None

    def revoked_level(self, chain: VerifiedChain) -> str | None:
        """The level at which an element of ``chain`` is revoked today, or None."""
        for probe in chain.probes:
            level = self._revocations.match(probe)
            if level is not None:
                return level
        return None


# Claims of the root that say nothing about the leaf: the root holder's key, its actor
# chain as the broker signed it, its renewal thread.
def leaf_claims(chain: VerifiedChain) -> Claims:
    """The leaf of ``chain`` as the broker's :class:`Claims`: the root token's claims with
    the leaf's holder, jti, times, scope, grants, audience and lineage.

    ``raw`` (what validation and introspection answer) is the leaf's effective payload:
    the root's, less what is the root holder's own, with the leaf's values, its implicit
    ``cnf`` (the leaf key's thumbprint) and ``offline`` (the root's ``jti``, the number
    of blocks and every holder, first to last). Its ``delegation_chain`` is every holder
    that handed the authority on (the root's records, then one per block). Raises
    :class:`TokenRejected` if the root's payload does not read as an agent token's claims.
    """
    try:
        root = claims_from_payload(KIND_AGENT, dict(chain.root_claims))
    except ClaimsError as exc:
        raise TokenRejected(f"offline chain root: {exc}", "claims") from None
    scope = tuple(chain.scope)
    grants = tuple(chain.grants or ())
    audience = tuple(chain.audience)
    raw = chain.leaf_payload()
    return replace(
        root,
        sub=chain.holder,
        jti=chain.jti,
        iat=chain.iat,
        nbf=chain.iat,
        exp=chain.exp,
        scope=scope,
        details=grants,
        aud=audience,
        lineage=tuple(chain.lineage),
        delegation_chain=tuple(chain.delegators),
        grant="",
        raw=raw,
    )


def offline_root(claims: Claims) -> str:
    """The root token's ``jti`` when ``claims`` are an offline chain's leaf
    (:func:`leaf_claims`: their payload carries ``offline``, which no token the broker
    signs does), else "".

    A leaf's own ``jti`` is its last block's, chosen by whoever derived it: it names the
    leaf only together with its root, never alone (``core.calls`` keys its budget so)."""
    offline = claims.raw.get("offline")
    if not isinstance(offline, dict):
        return ""
    root = offline.get("root_jti")
    return root if isinstance(root, str) and root else "?"  # a leaf all the same


def live_denial(store: Store, chain: VerifiedChain) -> str | None:
    """Why the store says ``chain`` must be refused now, or None: high assurance for an
    offline chain with a critical scope reads the revocation entries that could match any
    of its elements (by primary key), trusting no cache. Storage errors propagate."""
    keys: set[tuple[str, str]] = set()
    for probe in chain.probes:
        keys |= RevocationIndex.keys(probe)
    index = RevocationIndex()
    index.apply(store.find_revocations(sorted(keys)))
    for probe in chain.probes:
        level = index.match(probe)
        if level is not None:
            return f"offline chain element {probe.jti} revoked (level {level}, live read)"
    return None


def chain_lineage(chain: VerifiedChain) -> Lineage:
    """The lineage an audit entry about ``chain`` records (format v2): its app, its human
    principal's pseudonym and the first agent of the whole chain (the root token's chain
    root, or its holder when the root was not delegated)."""
    root = chain.root_claims
    lineage = root.get("lineage")
    app_id = ""
    if isinstance(lineage, list):
        app_id = next((a[4:] for a in lineage if isinstance(a, str) and a.startswith("app:")), "")
    principal = root.get("principal")
    agents = tuple(chain.agents)
    return Lineage(
        app_id=app_id,
        principal_ref=principal_ref(principal) if isinstance(principal, str) and principal else "",
        chain_root=agents[0] if agents else "",
    )
