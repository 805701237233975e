"""What the issuing services share: the lifetime clamp, minting the token an issuance
grants, the switch to a by-reference token, and how a new token reads in the audit log."""

from __future__ import annotations

from collections.abc import Sequence

from tasklease.core.auditformat import quoted
from tasklease.core.config import Config
from tasklease.core.introspection import new_reference
from tasklease.core.kernel import Issuance
from tasklease.core.records import ReferenceTokenRecord
from tasklease.core.tokenids import TokenIds, crossings, hop
from tasklease.core.tokens import KIND_AGENT, Claims, DelegationRecord, Signer, mint
from tasklease.rules.grants import digest

__all__ = [
    "binding_suffix",
    "clamp_ttl",
    "cnf_of",
    "listed",
    "mint_granted",
    "size_adapted",
    "token_challenge",
]


def clamp_ttl(requested: int | None, default: int, config: Config) -> int:
    """``requested`` (``default`` when absent or not positive), at most ``max_ttl``."""
    ttl = default if requested is None or requested <= 0 else requested
    return min(ttl, config.max_ttl)


def mint_granted(
    ring: Signer,
    config: Config,
    issuance: Issuance,
    *,
    iat: int,
    sub: str,
    aud: tuple[str, ...],
    client_id: str,
    task_id: str,
    orch_id: str,
    agent_key: bytes | None,
    cnf: dict[str, str] | None,
    ids: TokenIds,
    oiat: int | None = None,
    chain: tuple[DelegationRecord, ...] = (),
) -> tuple[str, Claims]:
    """The agent token ``issuance`` (the kernel's check) grants: its scope and grants,
    lifetime, renewal count, principal and lineage come from the issuance and nowhere
    else. Its ``jti`` comes from ``ids`` (``Kernel.token_ids``): an id carrying our MAC of
    the one hop out of here the token allows, which a chain that went out from here shows
    when it comes back (``core.tokenids``)."""
    vouched = hop(
        holder=sub,
        scope=issuance.scope,
        chain=chain,
        task_id=task_id,
        principal=issuance.principal,
        domains=crossings(aud, config.trust_domain),
        oiat=iat if oiat is None else oiat,
    )
    return mint(
        ring,
        kind=KIND_AGENT,
        iss=config.issuer,
        sub=sub,
        aud=aud,
        iat=iat,
        ttl=issuance.ttl(iat),
        scope=issuance.scope,
        client_id=client_id,
        task_id=task_id,
        orch_id=orch_id,
        oiat=oiat,
        rnc=issuance.renewals,
        delegation_chain=chain,
        principal=issuance.principal,
        agent_key=agent_key,
        cnf=cnf,
        lineage=issuance.lineage,
        grant=issuance.grant,
        max_exp=issuance.max_exp,
        attest=issuance.attest,
        details=issuance.details,
        jti=ids.new(vouched),
    )


def size_adapted(
    token: str, claims: Claims, config: Config
) -> tuple[str, ReferenceTokenRecord | None]:
    """``token``, or a by-reference token (and its record to store) when it is too large.

    Not counted here: a by-reference token is a form, not another token. It is counted
    once, under its kind, when its issuance is written (``tokens_issued``); its audit
    event says ``by_reference=true``."""
    if len(token) <= config.reference_token_threshold:
        return token, None
    return new_reference(claims, clock_skew=config.clock_skew)


def cnf_of(claims: Claims) -> dict[str, str] | None:
    """The token's holder binding (``cnf``, RFC 7800), or None for a bearer token."""
    cnf = claims.raw.get("cnf")
    return dict(cnf) if isinstance(cnf, dict) and cnf else None


def token_challenge(claims: Claims, error: str = "invalid_token") -> tuple[str, str]:
    """The ``WWW-Authenticate`` challenge for a refusal of the presented token: in the
    scheme the token is presented with (``DPoP`` when bound to a DPoP key)."""
    cnf = cnf_of(claims)
    return ("DPoP" if cnf is not None and "jkt" in cnf else "Bearer"), error


def binding_suffix(claims: Claims, reference: ReferenceTokenRecord | None) -> str:
    """Audit detail: which binding, audience, grants and form a freshly issued token has."""
    out = ""
    if claims.details:
        out += " grants=" + ",".join(
            f"{quoted(str(d.get('type')))}#{digest(d)[:12]}" for d in claims.details
        )
    cnf = cnf_of(claims)
    if cnf:
        out += " cnf=" + ",".join(sorted(cnf))
    if claims.aud:
        out += " aud=" + ",".join(quoted(aud) for aud in claims.aud)
    if reference is not None:
        out += " by_reference=true"
    return out


def listed(values: Sequence[str]) -> str:
    """Scopes, audiences or resources as audit text: ``[a b c]``, each as a field's value
    is written (``auditformat.quoted``), and quoted too when it holds a bracket: no item
    can end the list early or read as a field after it."""
    return "[" + " ".join(_item(value) for value in values) + "]"


def _item(value: str) -> str:
    text = quoted(value)
    return text if text[0] == '"' or ("[" not in text and "]" not in text) else f'"{text}"'
