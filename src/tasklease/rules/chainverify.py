"""What an offline chain grants: each block checked by the one issuance check, and verified.

:func:`derive` appends a block for a holder (the SDK: no broker call); :func:`verify_chain`
verifies a presented chain for a resource server or the broker: the broker's signature on
the root and its claims, then for every block the previous holder's signature, its depth,
its time, and its attenuation by :func:`tasklease.rules.issuance.check_issuance` with the
operation ``attenuate`` (scope, grants and audience only narrow, ``exp`` never past the
parent's, the depth limit, no agent twice), then revocation of every element (each
``jti``, each agent, the lineage) and the presenter's proof of possession of the last
delegate's key (a DPoP proof, RFC 9449, over the chain). Both walk the blocks with
:func:`walk`, so what the SDK derives is exactly what verifiers accept.
"""

from __future__ import annotations

import datetime
import hmac
import secrets
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import nacl.signing

from tasklease.rules import attenuation as fmt
from tasklease.rules import jws
from tasklease.rules.attenuation import Block, ChainError, DecodedChain
from tasklease.rules.binding import BindingError, DPoPVerifier, Presentation, check_binding
from tasklease.rules.chainroot import ChainRejected, RootClaims, root_claims_of
from tasklease.rules.claims import (
    ClaimRejected,
    DelegationRecord,
    check_claims,
    well_formed_cnf,
)
from tasklease.rules.grants import GrantError, TypeRule, parse_details
from tasklease.rules.issuance import IssuanceLimits, Limits, Parent, Refusal, check_issuance

__all__ = [
    "ROOT_TYPE",
    "ChainRejected",
    "Hop",
    "RevocationProbe",
    "Step",
    "VerifiedChain",
    "derive",
    "offline_limits",
    "recheck",
    "root_claims_of",
    "verify_chain",
    "walk",
]

ROOT_TYPE = "at+jwt"
_UNBOUNDED = 1 << 40  # no bound but the token's own (its exp and max_exp)


def offline_limits(
    *, max_ttl: int, max_delegation_depth: int, audience: Sequence[str] = ()
) -> IssuanceLimits:
    """The limits a party without the broker's configuration checks blocks with: the
    longest lifetime and depth it accepts, the broker's audiences when it knows them, and
    no renewal bound of its own (the root token's ``exp`` and ``max_exp`` bound the rest)."""
    return IssuanceLimits(
        max_ttl=max_ttl,
        max_renewals=_UNBOUNDED,
        max_delegation_depth=max_delegation_depth,
        audience=tuple(audience),
        renewal_ceiling=_UNBOUNDED,
    )


@dataclass(frozen=True, slots=True)
class Hop:
    """An earlier holder, as revocation matching reads a delegation record: the root's
    broker records say when (``delegated_at``), an offline block's holder does not ("")."""

    agent: str
    delegated_at: str = ""


@dataclass(frozen=True, slots=True)
class RevocationProbe:
    """One element of a chain (the root or a block) as the revocation index matches a
    token: its ``jti``, holder (``sub``), ``iat``, task, the holders before it and the
    lineage whose end ends it, and ``oiat``, when the root's registration was made (0
    for a standing probe). Each block also has a standing probe: its delegate alone,
    with ``iat`` 0 and no ``jti`` (an agent-level revocation of the delegate, whenever
    made)."""

    jti: str
    sub: str
    iat: int
    task_id: str
    delegation_chain: tuple[Hop, ...]
    lineage: tuple[str, ...]
    oiat: int = 0


@dataclass(frozen=True, slots=True)
class Step:
    """A block checked against its parent: the parent it was checked against (what its
    signer held) and the block's own authority as the issuance check granted it."""

    block: Block
    parent: Parent
    child: Parent


def _child(
    parent: Parent, block: Block, limits: Limits, rules: Mapping[str, TypeRule] | None
) -> Parent:
    """The block's authority: the issuance check of ``attenuate`` from ``parent``."""
    scope = parent.scope if block.scope is None else block.scope
    details = parent.details if block.grants is None else block.grants
    try:
        granted = check_issuance(
            "attenuate",
            parent,
            holder=block.sub,
            scope=scope,
            iat=block.iat,
            requested_ttl=block.exp - block.iat,
            limits=limits,
            resource=block.aud,
            details=details,
            rules=rules,
        )
    except Refusal as refusal:
        raise ChainRejected(
            f"block {block.depth}: {refusal.reason.message} ({refusal.detail})",
            "depth" if refusal.event_type == "depth" else "attenuation",
        ) from None
    if granted.exp != block.exp:
        raise ChainRejected(
            f"block {block.depth}: exp past what its parent allows ({granted.exp})", "attenuation"
        )
    return Parent(
        holder=block.sub,
        scope=granted.scope,
        audience=granted.audience,
        principal=granted.principal,
        lineage=granted.lineage,
        ceiling=granted.max_exp,
        ttl=block.exp - block.iat,
        renewals=granted.renewals,
        chain_agents=(*parent.chain_agents, block.sub),
        grant=block.jti,
        jti=block.jti,
        token_exp=block.exp,
        attest=granted.attest,
        details=granted.details,
    )


def walk(
    decoded: DecodedChain,
    root: RootClaims,
    *,
    limits: Limits,
    skew: float = 30,
    rules: Mapping[str, TypeRule] | None = None,
) -> tuple[Parent, bytes, tuple[Step, ...]]:
    """Check every block of ``decoded`` after ``root`` (whose own signature and claims are
    the caller's): signature by the previous holder's key, depth, ``iat`` not before its
    parent's (``skew`` allowed), and attenuation by the issuance check. Returns the root as
    a parent, the root holder's key, and each block's :class:`Step`.

    Raises:
        ChainRejected: at the first block that fails, naming it.
    """
    root_key = fmt.holder_key_of(root.raw)
    if root_key is None:
        raise ChainRejected("root names no holder key (agent_jwk)", "holder")
    if not well_formed_cnf(root.raw.get("cnf")):
        # A chain carries its root token as issued: a bearer root, cut out, would be the
        # root holder's whole authority to every delegate and every verifier shown it.
        raise ChainRejected(
            "root is a bearer token: a chain starts only from a token bound to its "
            "holder's DPoP key or certificate (cnf)",
            "binding",
        )
    root_parent = parent = Parent.of_token(root, limits)
    signer, parent_iat, steps = root_key, root.iat, []
    depth = len(root.delegation_chain)
    for index, block in enumerate(decoded.blocks):
        message = fmt.signing_input(decoded.previous(index), block.payload)
        if not jws.verify_raw(message, block.signature, signer):
            raise ChainRejected(f"block {index + 1}: bad signature", "signature")
        if block.depth != depth + index + 1:
            raise ChainRejected(f"block {index + 1}: depth {block.depth} out of order", "format")
        if block.iat + skew < parent_iat:
            raise ChainRejected(f"block {index + 1}: issued before its parent", "claims")
        child = _child(parent, block, limits, rules)
        steps.append(Step(block, parent, child))
        parent, signer, parent_iat = child, block.key, block.iat
    return root_parent, root_key, tuple(steps)


# The root token's claims that are its holder's alone, never the leaf's: its key, its
# actors, its renewal thread, its binding, its own grants and its delegation chain's hash.
ROOT_ONLY = ("agent_jwk", "act", "grant", "cnf", "authorization_details", "chain_hash")


@dataclass(frozen=True, slots=True)
class VerifiedChain:
    """A chain whose every check passed. The effective authority is the last block's:
    ``holder`` (its delegate), ``holder_key``, ``scope``, ``grants`` (RFC 9396
    ``authorization_details``), ``audience``, ``exp``, ``iat``, ``jti``, ``depth``
    (delegation hops from the first agent, the root's broker delegations included) and
    ``lineage``. ``root_claims`` are the root token's verified claims; ``jtis`` every
    element's ``jti`` (the root's first), ``agents`` every agent in the chain (the root's
    delegators, the root holder, each delegate), ``probes`` each element for the
    revocation index, ``delegators`` the broker-style delegation records of every holder
    that handed the authority on (the root's own records, then one per block). Its repr
    leaves out ``text``, the chain itself: it holds the root token, a credential."""

    text: str = field(repr=False)
    root_claims: Mapping[str, Any]
    blocks: tuple[Block, ...]
    holder: str
    holder_key: bytes
    scope: tuple[str, ...]
    grants: tuple[Mapping[str, Any], ...]
    audience: tuple[str, ...]
    exp: int
    iat: int
    jti: str
    depth: int
    principal: str
    task_id: str
    lineage: tuple[str, ...]
    jtis: tuple[str, ...]
    agents: tuple[str, ...]
    probes: tuple[RevocationProbe, ...]
    steps: tuple[Step, ...]
    root_delegation: tuple[DelegationRecord, ...]

    @property
    def root_jti(self) -> str:
        return self.jtis[0]

    @property
    def holder_jkt(self) -> str:
        """The RFC 7638 thumbprint of the last delegate's key."""
        return jws.jwk_thumbprint(self.holder_key)

    @property
    def root_holder_jkt(self) -> str:
        """The RFC 7638 thumbprint of the root token's holder key (its ``agent_jwk``): the
        key whose proofs of every chain derived from that root count against one quota in
        a replay ledger (:class:`~tasklease.rules.binding.QuotaProofLedger`), since a holder
        can derive any number of chains to delegate keys of its own making. "" if the root
        names none (:func:`walk` refuses such a chain)."""
        root_key = fmt.holder_key_of(self.root_claims)
        return jws.jwk_thumbprint(root_key) if root_key is not None else ""

    @property
    def delegators(self) -> tuple[DelegationRecord, ...]:
        """Every holder that handed the authority on, as broker-style delegation records:
        the root's own, then one per block (its signer, what it held, when, the block's
        signature in hex)."""
        return (
            *self.root_delegation,
            *(
                DelegationRecord(
                    agent=step.parent.holder,
                    scope=step.parent.scope,
                    delegated_at=_rfc3339(step.block.iat),
                    signature=step.block.signature.hex(),
                )
                for step in self.steps
            ),
        )

    @property
    def cnf(self) -> dict[str, str]:
        """The chain's implicit confirmation: the last delegate's key (RFC 9449 ``jkt``)."""
        return {"jkt": self.holder_jkt}

    def leaf_payload(self) -> dict[str, Any]:
        """The last holder's effective claims, as the broker's validation and a verifier
        answer them: the root's, less what is the root holder's own (:data:`ROOT_ONLY`),
        with the leaf's holder, ``jti``, times, scope, audience, lineage and grants, its
        implicit ``cnf``, and ``offline`` (the root's ``jti``, how many blocks, every
        holder first to last)."""
        payload = {k: v for k, v in self.root_claims.items() if k not in ROOT_ONLY}
        payload.update(
            sub=self.holder,
            jti=self.jti,
            iat=self.iat,
            nbf=self.iat,
            exp=self.exp,
            scope=" ".join(self.scope),
            aud=list(self.audience),
            cnf=self.cnf,
            offline={
                "root_jti": self.root_jti,
                "blocks": len(self.blocks),
                "holders": list(self.agents),
            },
        )
        if self.lineage:
            payload["lineage"] = list(self.lineage)
        if self.grants:
            payload["authorization_details"] = [dict(g) for g in self.grants]
        return payload


def _rfc3339(seconds: int) -> str:
    moment = datetime.datetime.fromtimestamp(seconds, tz=datetime.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _verified(
    decoded: DecodedChain, root: RootClaims, root_key: bytes, steps: Sequence[Step]
) -> VerifiedChain:
    base = tuple(Hop(r.agent, r.delegated_at) for r in root.delegation_chain)
    probes = [
        RevocationProbe(root.jti, root.sub, root.iat, root.task_id, base, root.lineage, root.oiat)
    ]
    holders: list[Hop] = [*base, Hop(root.sub)]
    for step in steps:
        block = step.block
        probes.append(
            RevocationProbe(
                block.jti,
                block.sub,
                block.iat,
                root.task_id,
                tuple(holders),
                step.child.lineage,
                root.oiat,
            )
        )
        # The delegate's standing: the broker refuses to delegate to a revoked agent, and
        # no broker saw this block. An agent-level revocation of the delegate matches it
        # whenever the block was made (a revoked agent cannot register or resume under
        # its id again); this probe names nothing else (no jti, task, chain or lineage).
        probes.append(RevocationProbe("", block.sub, 0, "", (), ()))
        holders.append(Hop(block.sub))
    leaf = steps[-1]
    return VerifiedChain(
        text=decoded.text,
        root_claims=MappingProxyType(root.raw),
        blocks=decoded.blocks,
        holder=leaf.block.sub,
        holder_key=leaf.block.key,
        scope=leaf.child.scope,
        grants=leaf.child.details,
        audience=leaf.child.audience,
        exp=leaf.block.exp,
        iat=leaf.block.iat,
        jti=leaf.block.jti,
        depth=leaf.block.depth,
        principal=root.principal,
        task_id=root.task_id,
        lineage=leaf.child.lineage,
        jtis=(root.jti, *(s.block.jti for s in steps)),
        agents=tuple(h.agent for h in holders),
        probes=tuple(probes),
        steps=tuple(steps),
        root_delegation=root.delegation_chain,
    )


def verify_chain(
    text: str,
    *,
    resolve_key: Callable[[str], nacl.signing.VerifyKey | None],
    issuer: str,
    audiences: Collection[str] | None,
    now: float,
    limits: Limits,
    max_lifetime: int,
    presented: Presentation | None,
    dpop: DPoPVerifier | None,
    revoked: Callable[[RevocationProbe], str | None] | None,
    skew: float = 30,
    rules: Mapping[str, TypeRule] | None = None,
    max_bytes: int = fmt.MAX_CHAIN_BYTES,
) -> VerifiedChain:
    """Verify a presented chain with no call to the broker.

    In order: the format (:func:`~tasklease.rules.attenuation.decode`); the root's header
    (``alg`` ``EdDSA``, ``typ`` ``at+jwt``, a ``kid`` ``resolve_key`` knows) and the
    broker's signature; the root's claims (:func:`~tasklease.rules.claims.check_claims`:
    issuer, time with ``exp`` dead at expiry and ``skew`` on ``nbf``/``iat``, lifetime,
    ``max_exp``, delegation chain and ``act``; its audience is the last block's business);
    every block (:func:`walk`) and its time (dead at its ``exp``, not issued more than
    ``skew`` ahead); the effective audience names one of ``audiences`` (``None``: any);
    every element against ``revoked`` (the revocation index's ``match``; ``None`` only
    where no revocation state is followed); then the presenter's proof: ``presented``
    must use the ``DPoP`` scheme with a proof signed by the last delegate's key whose
    ``ath`` is the chain's hash (``dpop`` checks it and remembers it, single use, against
    the quota of the root holder's key: :attr:`VerifiedChain.root_holder_jkt`).
    ``presented`` None leaves possession to the caller, who must say why (introspection
    reports the binding; a late audit report records what happened).

    Raises:
        ChainRejected: at the first failed check; ``reason`` is for the audit log only.
    """
    try:
        decoded = fmt.decode(text, max_bytes=max_bytes)
    except ChainRejected:
        raise
    except ChainError as exc:
        raise ChainRejected(exc.reason, exc.category) from None
    if not decoded.blocks:
        raise ChainRejected("a chain has at least one block", "format")
    try:
        _, _, payload = jws.decode_parts(decoded.root, resolve_key, {ROOT_TYPE}, max_bytes)
    except jws.JWSError as exc:
        raise ChainRejected(f"root: {exc.reason}", "signature") from None
    root = root_claims_of(payload, decoded.root)
    try:
        check_claims(
            root,
            payload,
            issuer=issuer,
            audiences=None,
            now=now,
            skew=skew,
            max_lifetime=max_lifetime,
            max_depth=limits.max_delegation_depth,
        )
    except ClaimRejected as exc:
        raise ChainRejected(f"root: {exc.reason}", exc.category) from None
    _, root_key, steps = walk(decoded, root, limits=limits, skew=skew, rules=rules)
    _blocks_alive(steps, now, skew)
    verified = _verified(decoded, root, root_key, steps)
    if audiences is not None and not any(a in verified.audience for a in audiences):
        raise ChainRejected("audience mismatch", "audience")
    _not_revoked(verified, revoked)
    if presented is not None:
        if dpop is None:
            raise ValueError("a presented chain needs a DPoP verifier to check its proof")
        try:
            check_binding(
                verified.cnf,
                text,
                presented,
                dpop=dpop,
                now=now,
                holder=verified.root_holder_jkt,
            )
        except BindingError as exc:
            raise ChainRejected(exc.reason, "binding") from None
    return verified


def _blocks_alive(steps: Sequence[Step], now: float, skew: float) -> None:
    for step in steps:
        block = step.block
        if now >= block.exp:
            raise ChainRejected(f"block {block.depth}: expired", "expired")
        if now + skew < block.iat:
            raise ChainRejected(f"block {block.depth}: issued in the future", "not_yet_valid")


def _not_revoked(
    chain: VerifiedChain, revoked: Callable[[RevocationProbe], str | None] | None
) -> None:
    if revoked is not None:
        for probe in chain.probes:
            level = revoked(probe)
            if level is not None:
                what = probe.jti or probe.sub  # a standing probe names its delegate
                raise ChainRejected(f"{what} has been revoked (level {level})", "revoked")


def recheck(
    chain: VerifiedChain,
    *,
    now: float,
    skew: float,
    revoked: Callable[[RevocationProbe], str | None] | None,
) -> None:
    """What may have changed since :func:`verify_chain` accepted ``chain`` (for a verifier
    that remembers verified chains, as it remembers tokens): the root and every block
    alive at ``now`` (dead at ``exp``; ``nbf``/``iat`` within ``skew``), and no element
    revoked. The presenter's proof is the caller's, at every use.

    Raises:
        ChainRejected: expired, not yet valid or revoked.
    """
    root = chain.root_claims
    if now >= root["exp"]:
        raise ChainRejected("root: token expired", "expired")
    if now + skew < root.get("nbf", root["iat"]) or now + skew < root["iat"]:
        raise ChainRejected("root: token not yet valid", "not_yet_valid")
    _blocks_alive(chain.steps, now, skew)
    _not_revoked(chain, revoked)


def derive(
    credential: str,
    key: nacl.signing.SigningKey,
    *,
    delegate: str,
    delegate_key: bytes,
    now: int,
    ttl: int,
    scope: Sequence[str] | None = None,
    grants: Sequence[Mapping[str, Any]] | None = None,
    audience: str | None = None,
    jti: str | None = None,
    limits: Limits | None = None,
    rules: Mapping[str, TypeRule] | None = None,
) -> str:
    """Hand part of ``credential`` (a root token, or a chain this holder received) to
    ``delegate`` offline: the chain with one more block signed by ``key``.

    ``key`` must be the current holder's (the root's ``agent_jwk``, or the last block's
    ``key``). The block asks for ``scope``, ``grants`` and ``audience`` (None: the
    parent's, unchanged) for ``ttl`` seconds from ``now``; the issuance check decides,
    exactly as every verifier will: ``exp`` is clamped to the parent's, a widening is
    refused. The blocks already there are checked too (signatures, attenuation); the
    root's broker signature is not (the holder may not hold the broker's keys).

    Raises:
        ChainError: a malformed credential, another key than the holder's, or a refusal
            of the issuance check (its words in ``reason``).
    """
    limits = limits or offline_limits(max_ttl=_UNBOUNDED, max_delegation_depth=5)
    decoded = fmt.decode(credential if fmt.is_chain(credential) else fmt.PREFIX + credential)
    root = root_claims_of(decoded.root_claims, decoded.root)
    root_parent, root_key, steps = walk(decoded, root, limits=limits, rules=rules)
    parent, holder_key = (
        (steps[-1].child, steps[-1].block.key) if steps else (root_parent, root_key)
    )
    if not hmac.compare_digest(bytes(key.verify_key), holder_key):
        raise ChainError("the signing key is not the current holder's key", "holder")
    if len(delegate_key) != 32:
        raise ChainError("the delegate's key is not an Ed25519 public key", "format")
    jti = jti or _new_jti()
    depth = len(root.delegation_chain) + len(steps) + 1
    asked_scope = None if scope is None else tuple(scope)
    try:  # the grants as parsed (normalized): what the block carries is what is checked
        asked_grants = None if grants is None else parse_details([dict(g) for g in grants])
    except GrantError as exc:
        raise ChainError(f"grants: {exc.reason}", "format") from None
    probe = Block(
        sub=delegate,
        key=bytes(delegate_key),
        exp=now + ttl,
        iat=now,
        jti=jti,
        depth=depth,
        scope=asked_scope,
        grants=asked_grants,
        aud=audience,
        signature=b"",
        payload=b"",
        text="",
    )
    granted = _granted_exp(parent, probe, limits, rules)
    payload = fmt.block_payload(
        sub=delegate,
        key=bytes(delegate_key),
        exp=granted,
        iat=now,
        jti=jti,
        depth=depth,
        scope=None if asked_scope == parent.scope else asked_scope,
        grants=None if asked_grants == parent.details else asked_grants,
        aud=None if audience is None or (audience,) == parent.audience else audience,
    )
    if len(decoded.blocks) >= fmt.MAX_BLOCKS:
        raise ChainError(f"a chain holds at most {fmt.MAX_BLOCKS} blocks")
    out = decoded.text + fmt.SEPARATOR + fmt.sign_block(decoded.previous(len(steps)), payload, key)
    if len(out) > fmt.MAX_CHAIN_BYTES:
        raise ChainError(f"the chain would exceed {fmt.MAX_CHAIN_BYTES} bytes")
    return out


def _granted_exp(
    parent: Parent, block: Block, limits: Limits, rules: Mapping[str, TypeRule] | None
) -> int:
    """The ``exp`` the issuance check grants ``block`` (its asked ``exp`` clamped)."""
    scope = parent.scope if block.scope is None else block.scope
    details = parent.details if block.grants is None else block.grants
    try:
        return check_issuance(
            "attenuate",
            parent,
            holder=block.sub,
            scope=scope,
            iat=block.iat,
            requested_ttl=block.exp - block.iat,
            limits=limits,
            resource=block.aud,
            details=details,
            rules=rules,
        ).exp
    except Refusal as refusal:
        raise ChainError(f"{refusal.reason.message} ({refusal.detail})", "attenuation") from None


def _new_jti() -> str:
    return secrets.token_hex(16)
