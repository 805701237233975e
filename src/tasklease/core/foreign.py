"""Foreign tokens: a federated trust domain's agent token, verified, and read in our terms.

A token issued by a federated domain ``D`` can be the parent of one of ours (token
exchange, ``core.exchange``). This module is the pure part of that: no store, no clock
but the ``now`` it is given.

**Which domain.** A foreign token belongs to the trust domain of its holder (a SPIFFE
ID: ``act.sub`` of a delegated token, else ``sub``), as a JWT-SVID belongs to its
``sub``'s: the holder is read before the signature only to choose which domain's bundle
keys may verify it, and the verified holder must be of the same domain.
``iss`` is recorded, never used to choose keys (two brokers may both call themselves
``tasklease``). Only ``at+jwt`` tokens signed with ``EdDSA`` by a key of that domain's
last good bundle are accepted; ``exp`` with no leeway, ``nbf``/``iat`` with our skew, a
lifetime within our ``max_ttl``, the chain within our depth limit with its hash, ``act``
as the chain implies, and every delegation record signed by a key of that bundle.

**Bearer only.** A token bound to its holder's key (``cnf``: DPoP, RFC 9449, or a client
certificate, RFC 8705) is refused: the exchange request carries proof of the actor's key
only, so nothing shows the presenter holds the subject token's, and a stolen bound token
would cross as a bearer one.

**Audience.** A foreign token is exchanged here only if its ``aud`` names
``spiffe://<our trust domain>`` (:func:`federation_audience`): a token made for one
domain cannot be replayed at another.

**Namespaced lineage.** Our token records its foreign ancestry so that the foreign
domain's revocations can end it here (``docs/federation.md``). For a token of ``D``:

* ``fed:D`` — everything that came from ``D`` (an operator can end it all at once);
* ``fed:D:task:<task_id>`` — its task, and the task of each of ``D``'s agents among its
  holder and delegators (``D``'s task revocation ends what they hold or delegated, as
  their SPIFFE IDs name it); ``fed:D:agent:<spiffe id>`` for its holder and every
  delegator in its chain;
* ``fed:D:<id>`` for every entry of its own ``lineage`` (apps, grants, token ids,
  themselves possibly namespaced by a third domain) and, added by the issuance check,
  its grant and ``jti``.

An entry that passes through our own domain (``fed:D:x`` where ``x`` was ours, or
``fed:D:fed:E:...:fed:<us>:x``) is mapped back to our local id ``x``, so our own
revocation index applies to a token that went out and came back; our own agents and
tasks named that way are checked in our store by the exchange service instead. The
entry is listed as the peer names it too: ``D``'s revocation of what it derived from
ours (``fed:<us>:x``, or ``fed:<us>`` when ``D`` removes our domain) reaches us as
``fed:D:fed:<us>:…`` and ends what came back through ``D``.

**Revocations crossing.** :func:`converted` turns one entry of ``D``'s revocation feed
into our own chain-level entry on the namespaced target, which the ``lineage`` of every
token we derived from ``D`` lists: task, agent, chain and token entries alike, matched
regardless of issue time (a token we minted after ``D`` revoked but before we heard of
it dies too).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

import nacl.exceptions
import nacl.signing

from tasklease.core.config import Config
from tasklease.core.delegation import PRINCIPAL_MAX_CHARS, verify_chain_records
from tasklease.core.kernel import Parent
from tasklease.core.lineage import app_ids
from tasklease.core.records import MAX_TARGET, RevocationRecord, target_size
from tasklease.core.spiffe import federation_audience, parse_agent_id
from tasklease.core.tokenids import hop
from tasklease.core.tokens import (
    KIND_AGENT,
    Claims,
    ClaimsError,
    DelegationRecord,
    claims_from_payload,
)
from tasklease.rules import jws
from tasklease.rules import scopes as scope_rules
from tasklease.rules.claims import MAX_LINEAGE, ClaimRejected, check_claims
from tasklease.rules.principals import human_principal

__all__ = [
    "FOREIGN_PREFIX",
    "ForeignProbe",
    "ForeignRejected",
    "ForeignToken",
    "LocalAncestry",
    "agent_entry",
    "converted",
    "domain_entry",
    "federation_audience",
    "foreign_parent",
    "local_part",
    "map_scopes",
    "namespaced",
    "read_foreign",
    "subject_domain",
    "task_entry",
]

FOREIGN_PREFIX = "fed:"

_log = logging.getLogger("tasklease.federation")


class ForeignRejected(Exception):
    """A foreign token was refused: ``reason`` for the audit log, never the caller."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def namespaced(domain: str, entry: str) -> str:
    """``entry`` of domain ``domain``'s lineage, as our lineage lists it."""
    return f"{FOREIGN_PREFIX}{domain}:{entry}"


def foreign_principal(domain: str, principal: str) -> str:
    """A foreign token's principal as our tokens carry it. A human's stays as it is: the
    chain still ends at that human. One of the domain's own creator identities (its
    ``admin``, an app or operator of its own), or none, is namespaced under the domain
    (``fed:<domain>:<principal>``): it must never read as one of ours, and no creator
    here may name a ``fed:`` principal (``rules.principals``)."""
    return human_principal(principal) or namespaced(domain, principal or "unknown")


def domain_entry(domain: str) -> str:
    """The lineage ancestor of everything derived here from ``domain`` (``fed:D``): a
    chain-level revocation on it ends all of that at once."""
    return f"{FOREIGN_PREFIX}{domain}"


def agent_entry(domain: str, agent_id: str) -> str:
    return namespaced(domain, f"agent:{agent_id}")


def task_entry(domain: str, task_id: str) -> str:
    return namespaced(domain, f"task:{task_id}")


def local_part(entry: str, own_domain: str) -> str | None:
    """The id ``own_domain`` gave a namespaced entry that passes through it, else None.

    ``fed:a:fed:b:x`` is ``x`` for ``b``; ``fed:a:fed:b`` (``b``'s own root, as ``a``
    recorded it) is ``""`` for ``b``: nothing of ``b``'s to list.
    """
    rest = entry
    while rest.startswith(FOREIGN_PREFIX):
        domain, sep, tail = rest[len(FOREIGN_PREFIX) :].partition(":")
        if domain == own_domain:
            return tail
        if not sep:
            return None
        rest = tail
    return None


def subject_domain(token: str, max_bytes: int) -> str:
    """The trust domain of an agent token's holder, read WITHOUT verifying anything.

    The holder is the current actor (the outermost ``act.sub``) of a token that names
    one, else its ``sub``: a broker only issues tokens to its own agents, so the holder's
    domain is the issuer's. Only to choose whose keys may verify the token
    (:func:`read_foreign` checks the verified holder is of the same domain). Raises
    :class:`ForeignRejected`.
    """
    try:
        _, payload = jws.decode_unverified(token, max_bytes=max_bytes)
    except jws.JWSError as exc:
        raise ForeignRejected(f"subject_token is not a compact JWS: {exc.reason}") from None
    act = payload.get("act")
    holder = act.get("sub") if isinstance(act, dict) else payload.get("sub")
    agent = parse_agent_id(holder) if isinstance(holder, str) else None
    if agent is None:
        raise ForeignRejected("subject_token's holder is not an agent SPIFFE ID")
    return agent.trust_domain


@dataclass(frozen=True, slots=True)
class ForeignToken:
    """A verified token of the federated trust domain ``domain``."""

    domain: str
    claims: Claims


def read_foreign(
    token: str,
    domain: str,
    keys: Mapping[str, bytes],
    *,
    own_domain: str,
    now: float,
    config: Config,
) -> ForeignToken:
    """Verify ``token`` as an agent token of ``domain`` with its bundle ``keys``.

    ``keys`` maps ``kid`` to a raw Ed25519 public key (the domain's last good bundle).
    A token bound to a key (``cnf``) is refused (module docstring, "Bearer only").
    Raises :class:`ForeignRejected` (the reason for the audit log).
    """
    verify_keys: dict[str, nacl.signing.VerifyKey] = {}
    for kid, raw in keys.items():
        try:
            verify_keys[kid] = nacl.signing.VerifyKey(raw)
        except (nacl.exceptions.CryptoError, TypeError, ValueError):
            continue
    try:
        decoded = jws.decode(
            token,
            resolve_key=verify_keys.get,
            allowed_typs=(KIND_AGENT,),
            max_bytes=config.max_token_bytes,
        )
        claims = claims_from_payload(decoded.typ, decoded.claims)
    except jws.JWSError as exc:
        raise ForeignRejected(f"subject_token of {domain}: {exc.reason}") from None
    except ClaimsError as exc:
        raise ForeignRejected(f"subject_token of {domain}: {exc}") from None
    agent = parse_agent_id(claims.sub)
    if agent is None or agent.trust_domain != domain:
        raise ForeignRejected(f"subject_token's holder is not an agent of {domain}")
    try:
        # The issuer is whatever the domain calls itself: its bundle key is what vouches.
        check_claims(
            claims,
            claims.raw,
            issuer=claims.iss,
            audiences=(federation_audience(own_domain),),
            now=now,
            skew=config.clock_skew,
            max_lifetime=config.max_ttl,
            max_depth=config.max_delegation_depth,
        )
    except ClaimRejected as exc:
        raise ForeignRejected(f"subject_token of {domain}: {exc.reason}") from None
    if "cnf" in claims.raw:
        # Sender-constrained (RFC 9449 DPoP, RFC 8705 certificate): only the holder of its
        # key may present it, and the exchange request proves no key but the actor's. A
        # stolen bound token would otherwise cross as a bearer one.
        raise ForeignRejected(
            f"subject_token of {domain} is bound to a key (cnf): only its holder may present it"
        )
    chain_keys = list(verify_keys.values())
    if not verify_chain_records(claims.delegation_chain, claims.sub, lambda: chain_keys):
        raise ForeignRejected(
            f"subject_token of {domain}: a delegation record {domain} never signed"
        )
    return ForeignToken(domain, claims)


def map_scopes(
    held: Iterable[str],
    scope_map: Sequence[tuple[str, str]],
    ceiling: Sequence[str],
) -> tuple[str, ...]:
    """What a foreign token's scopes grant here: mapped, then held to the ceiling.

    Each pair ``(foreign, local)`` grants ``local`` for every held scope ``foreign``
    covers; when both end in the wildcard identifier ``*``, the held scope's identifier
    carries over (``read:data:*`` → ``read:records:*`` grants ``read:records:42`` for a
    held ``read:data:42``). Unmapped scopes grant nothing. Every result is then kept
    only as far as a ceiling scope covers it (a wildcard result meets a narrower ceiling
    scope as that scope); an empty ceiling leaves the mapping, itself a list of the
    local scopes the operator allows, as the only bound. Only narrows: nothing is
    granted that no pair maps to, or that a ceiling does not cover.
    """
    mapped: list[str] = []
    for scope in held:
        parsed = scope_rules.parse_scope(scope)
        if parsed is None:
            continue
        for foreign, local in scope_map:
            if not scope_rules.covers(foreign, scope):
                continue
            local_parts = scope_rules.parse_scope(local)
            if local_parts is None:
                continue
            grant = local
            if local_parts[2] == "*" and foreign.endswith(":*"):
                grant = f"{local_parts[0]}:{local_parts[1]}:{parsed[2]}"
            if grant not in mapped:
                mapped.append(grant)
    return scope_rules.intersect(mapped, ceiling) if ceiling else tuple(mapped)


@dataclass(frozen=True, slots=True)
class LocalAncestry:
    """Ancestors of a foreign token that are ours (it went out and came back): our
    agents and our tasks it names, for the exchange service to check in our store, and
    our own lineage ids it lists (the token and grant ids of ours it descends from)."""

    agents: tuple[str, ...] = ()
    tasks: tuple[str, ...] = ()
    ids: tuple[str, ...] = ()
    apps: tuple[str, ...] = ()
    """Our apps it lists (``app:<app_id>``): the peer's word, which names the app the
    token descends from (its audit events, the issuance policy's ``App``), so each must
    be the app of one of ``agents`` by our own records."""
    out_to: str = ""
    """The trust domain the chain's last hop out of ours went to ("" if no record of the
    chain is by one of our agents)."""
    hop_out: bytes = b""
    """That hop (``core.tokenids.hop``), which one of ``ids`` must vouch for."""


def _ancestry(ft: ForeignToken, own_domain: str) -> tuple[list[str], LocalAncestry]:
    """The foreign token's ancestry as our lineage lists it (without its grant and jti,
    which the issuance check appends), and which of its ancestors are our own."""
    d, claims = ft.domain, ft.claims
    raw = [domain_entry(d)]
    if claims.task_id:
        raw.append(task_entry(d, claims.task_id))
    hops = [record.agent for record in claims.delegation_chain]
    raw += [agent_entry(d, agent) for agent in (*hops, claims.sub)]
    # D's task revocation also ends what its agents of that task hold or delegated (their
    # SPIFFE IDs name it), whatever the token's own task: so do its entries here.
    raw += [
        task_entry(d, parsed.task_id)
        for agent in (*hops, claims.sub)
        if (parsed := parse_agent_id(agent)) is not None and parsed.trust_domain == d
    ]
    raw += [namespaced(d, entry) for entry in claims.lineage]
    lineage: list[str] = []
    agents: list[str] = []
    tasks: list[str] = []
    ids: list[str] = []
    apps: list[str] = []
    for entry in raw:
        mine = local_part(entry, own_domain)
        if mine is not None and entry not in lineage:
            # Ours again below; as the peer names it too, so that the peer's revocations of
            # what it derived from ours (its removal of our domain, ``fed:<us>``, included)
            # end what came back through it, as they end everything else it sent us.
            lineage.append(entry)
        if mine is None:
            found = entry
        elif not mine:
            continue
        elif mine.startswith("agent:"):
            # Ours only if its SPIFFE ID is: the domain we sent a token to lists every agent
            # of its chain under our name, a third domain's agent that reached it through
            # us too, and that one is in no store of ours.
            agent = mine[len("agent:") :]
            parsed = parse_agent_id(agent)
            if parsed is not None and parsed.trust_domain == own_domain:
                agents.append(agent)
            continue
        elif mine.startswith("task:"):
            tasks.append(mine[len("task:") :])
            continue
        else:
            found = mine
            ids.append(mine)
            if app_ids((mine,)):
                apps.append(mine)
        if found not in lineage:
            lineage.append(found)
    for agent in (*hops, claims.sub):
        parsed = parse_agent_id(agent)
        if parsed is not None and parsed.trust_domain == own_domain and agent not in agents:
            agents.append(agent)
    out_to, hop_out = _last_hop_out(claims, own_domain)
    return lineage, LocalAncestry(
        tuple(agents), tuple(tasks), tuple(ids), tuple(apps), out_to, hop_out
    )


def _last_hop_out(claims: Claims, own_domain: str) -> tuple[str, bytes]:
    """The last hop out of our domain that a foreign chain shows: the trust domain it
    went to (the next agent's) and the hop our token must vouch for (``core.tokenids``),
    read from the last record by one of our agents and the records before it (a peer
    signs them again, keeping their agents, scopes and times). ("", b"") when no record
    of the chain is by one of our agents."""
    records = claims.delegation_chain
    for at in range(len(records) - 1, -1, -1):
        ours = parse_agent_id(records[at].agent)
        if ours is None or ours.trust_domain != own_domain:
            continue
        after = parse_agent_id(records[at + 1].agent if at + 1 < len(records) else claims.sub)
        domain = after.trust_domain if after is not None else ""
        vouched = hop(
            holder=records[at].agent,
            scope=records[at].scope,
            chain=records[:at],
            task_id=claims.task_id,
            principal=claims.principal,
            domains=(domain,),
            oiat=claims.oiat,
        )
        return domain, vouched
    return "", b""


def _as_ours(entry: str, own_domain: str) -> str:
    mine = local_part(entry, own_domain)
    return mine or entry


def foreign_parent(
    ft: ForeignToken,
    *,
    scope: tuple[str, ...],
    max_ttl: int,
    own_domain: str,
    config: Config,
) -> tuple[Parent, LocalAncestry]:
    """The kernel :class:`Parent` a verified foreign token stands for here.

    ``scope`` is what it grants here (:func:`map_scopes`); ``max_ttl`` the federation
    record's cap on one token's lifetime. Its ceiling is the token's ``max_exp`` (or its
    ``exp``), its renewal count carries on, its chain agents are its delegators and its
    holder, its principal is its own, its lineage namespaced (module docstring).

    Raises:
        ForeignRejected: the namespaced lineage would be longer than a token may carry,
            or one of its ids longer than a revocation target (:data:`MAX_TARGET`):
            ``ft.domain``'s revocation of it could never be made ours (:func:`converted`).
    """
    claims = ft.claims
    lineage, local = _ancestry(ft, own_domain)
    grant = _as_ours(namespaced(ft.domain, claims.grant_id), own_domain)
    jti = _as_ours(namespaced(ft.domain, claims.jti), own_domain)
    if len(lineage) + 2 > MAX_LINEAGE:
        raise ForeignRejected(f"lineage of {len(lineage) + 2} ancestors exceeds {MAX_LINEAGE}")
    longest = max(target_size(entry) for entry in (*lineage, grant, jti))
    if longest > MAX_TARGET:
        raise ForeignRejected(
            f"a lineage id of {longest} bytes here exceeds {MAX_TARGET}: "
            f"{ft.domain} could not revoke it here"
        )
    principal = foreign_principal(ft.domain, claims.principal)
    if len(principal) > PRINCIPAL_MAX_CHARS:
        raise ForeignRejected(f"principal of {len(principal)} characters here is too long")
    ceiling = min(claims.max_exp, claims.exp) if claims.max_exp else claims.exp
    records = claims.delegation_chain
    root = parse_agent_id(records[0].agent) if records else None
    if local.agents and root is not None and root.trust_domain == own_domain:
        # A chain that started here and comes back lives no longer than its lineage could
        # have here: registered at its oiat (which our token's id vouches for), it ends by
        # renewal_ceiling, whatever the peer's token says. (A chain that started in
        # another domain keeps that domain's registration time and ceilings.)
        ceiling = min(ceiling, claims.oiat + config.renewal_ceiling)
    parent = Parent(
        holder=claims.sub,
        scope=scope,
        audience=claims.aud,
        principal=principal,
        lineage=tuple(lineage),
        ceiling=ceiling,
        ttl=max(1, min(max_ttl, config.max_ttl)),
        renewals=claims.rnc,
        chain_agents=(*(r.agent for r in claims.delegation_chain), claims.sub),
        grant=grant,
        jti=jti,
        token_exp=claims.exp,
    )
    return parent, local


@dataclass(frozen=True, slots=True)
class ForeignProbe:
    """A foreign token as our revocation index sees it: our operators' own entries on
    its agents (by SPIFFE ID) and on its namespaced lineage match it."""

    claims: Claims
    lineage: tuple[str, ...]

    @property
    def jti(self) -> str:
        return ""

    @property
    def sub(self) -> str:
        return self.claims.sub

    @property
    def iat(self) -> int:
        return self.claims.iat

    @property
    def task_id(self) -> str:
        return self.claims.task_id

    @property
    def delegation_chain(self) -> Sequence[DelegationRecord]:
        return self.claims.delegation_chain


def converted(
    record: RevocationRecord,
    domain: str,
    *,
    now: float,
    expiry: Callable[[float], float],
    ahead: int = 0,
) -> RevocationRecord | None:
    """Our own revocation entry for one entry of federated domain ``domain``'s feed.

    Every level becomes a chain-level entry on the namespaced target our tokens derived
    from ``domain`` list in their lineage: ``token`` and ``chain`` on a lineage id →
    ``fed:D:<id>``; ``agent`` and ``chain`` on a SPIFFE ID → ``fed:D:agent:<id>``;
    ``task`` → ``fed:D:task:<id>``. Other entries (an operator's, level ``agent`` on a
    name that is no SPIFFE ID) concern nothing we derived: None.

    ``revoked_at`` is the peer's, but never more than ``ahead`` seconds past ``now`` (a
    peer's clock cannot date an entry far into our future, which would hide its later
    revocations of the target from :class:`core.peerfeed.PeerFeeds` as no news); the
    entry lives until ``expiry(now)``, counted from when we heard of it: long enough to
    outlive every token we minted before then. (Ours match by lineage, whenever issued:
    the time only tells a later revocation from one heard again. A peer dates its agent,
    task and chain-on-agent entries ``clock_skew`` past its clock, which may run up to
    ``clock_skew`` ahead of ours: ``ahead`` is twice that, so that an entry heard again
    converts to the same one, not a wider one at every read. docs/decisions.md 142.)

    An entry whose target here would be longer than :data:`MAX_TARGET` (bytes) is logged and
    None: no lineage of ours lists such an id (:func:`foreign_parent` refuses it), and
    stored it would be an event too large for our own feed's readers.
    """
    level, target = record.level, record.target
    if not target:
        return None
    if level in ("agent", "chain") and target.startswith("spiffe://"):
        if parse_agent_id(target) is None:
            return None
        ours = agent_entry(domain, target)
    elif level == "agent":
        return None
    elif level == "task":
        ours = task_entry(domain, target)
    elif level in ("token", "chain"):
        ours = namespaced(domain, target)
    else:
        return None
    size = target_size(ours)
    if size > MAX_TARGET:
        _log.warning(
            "revocation feed of %s: skipped a %s-level entry whose target here would be "
            "%d bytes (at most %d); seq=%d",
            domain,
            level,
            size,
            MAX_TARGET,
            record.seq,
        )
        return None
    revoked_at = min(int(record.revoked_at), math.floor(now) + ahead)
    return RevocationRecord("chain", ours, revoked_at, expiry(now))
