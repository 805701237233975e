"""Token ids a federated peer can neither make nor reuse: the ``jti`` of our agent tokens.

A chain that went out from here and comes back through token exchange lists the ids of
our token it descends from (``fed:<us>:<jti>``, ``core.foreign``); that is how the
exchange tells a chain our agent really started from a peer's word that it did
(docs/decisions.md 174, 231, 243). A random id proves nothing (a peer can write any
string), so an id we mint authenticates itself, and what it authenticates is the one hop
out of here its token allows: 10 random bytes and the first 6 bytes of an HMAC-SHA256,
under a key derived from the broker's nonce secret and its trust domain, of those bytes
and the token's :func:`hop` (its holder, scope, delegation chain, task, human principal,
the federated trust domains its audience names, and its lineage's registration time).
16 bytes shown as 32 lowercase hex characters, the shape AgentWrit's wire contract gives
a ``jti``.

When the chain comes back, the exchange reads the same :func:`hop` from it (the last
record by one of our agents, the records before it, the domain after it) and needs a
listed id whose tag verifies for that hop. So a peer that has seen one of our tokens
(presented to one of its resource servers) cannot turn its id into a hop our agent never
made: the id vouches only for a token that named the peer's trust domain as its audience,
the token its holder made to cross there, and only for that token's holder, scope, chain,
task and principal. What comes back lives here no longer than its lineage could have:
its registration time (``oiat``, vouched for too) plus ``renewal_ceiling``
(``core.foreign``). A token naming several federated domains can be exchanged at each,
but what comes back from it is refused (its hop names them all; the chain shows one).

80 random bits keep ids apart (about 2**-41 for two alike among a trillion tokens); 48
bits of tag make guessing one an online search of 2**48 refused, audited exchanges. Every
replica sharing the secret mints and recognises the same ids, with no storage and no
I/O; another broker (another secret, or another trust domain) recognises none of ours.
An id minted before a release that changed what it vouches for verifies for nothing: a
chain descending from such a token is refused when it comes back (tokens live minutes).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
from collections.abc import Iterable, Sequence

from tasklease.core.spiffe import audience_domain
from tasklease.core.tokens import DelegationRecord
from tasklease.rules.principals import human_principal

__all__ = ["JTI_HEX_CHARS", "TokenIds", "crossings", "hop", "token_id_label"]

_RANDOM_BYTES = 10
_TAG_BYTES = 6
JTI_HEX_CHARS = 2 * (_RANDOM_BYTES + _TAG_BYTES)
"""The length of a ``jti`` we mint: 32 lowercase hex characters."""
_SHAPE = re.compile(rf"[0-9a-f]{{{JTI_HEX_CHARS}}}")
_CONTEXT = b"tasklease-jti-v2"


def token_id_label(trust_domain: str) -> bytes:
    """The label the token-id key is derived under (``NonceIssuer.derived_key``): one key
    per trust domain, so two domains sharing a secret by mistake still mint apart."""
    return b"token-id:" + trust_domain.encode("utf-8")


def crossings(aud: Iterable[str], own_domain: str) -> tuple[str, ...]:
    """The trust domains other than ours that a token with audience ``aud`` may be
    exchanged at (its ``spiffe://<trust domain>`` entries), sorted."""
    found = {d for a in aud if (d := audience_domain(a)) is not None and d != own_domain}
    return tuple(sorted(found))


def hop(
    *,
    holder: str,
    scope: Sequence[str],
    chain: Sequence[DelegationRecord],
    task_id: str,
    principal: str,
    domains: Sequence[str],
    oiat: int,
) -> bytes:
    """What an agent token's id vouches for: the hop its ``holder`` may make out of here,
    with ``scope``, after ``chain`` (each record's agent, scope and time: a peer signs
    them again), in ``task_id``, for the human ``principal`` (a creator identity counts
    as none: it is renamed at each crossing), into one of ``domains``, in the lineage
    registered at ``oiat`` (which bounds, by ``renewal_ceiling``, how long what comes
    back may live here). A digest."""
    content = [
        holder,
        list(scope),
        [[r.agent, list(r.scope), r.delegated_at] for r in chain],
        task_id,
        human_principal(principal),
        sorted(domains),
        oiat,
    ]
    text = json.dumps(content, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).digest()


class TokenIds:
    """Mints token ids that vouch for a :func:`hop`, and checks them (module docstring)."""

    def __init__(self, key: bytes) -> None:
        if len(key) < 32:
            raise ValueError("token id key must be at least 32 bytes")
        self._key = key

    def _tag(self, body: bytes, vouched: bytes) -> bytes:
        mac = hmac.new(self._key, _CONTEXT + body + vouched, hashlib.sha256)
        return mac.digest()[:_TAG_BYTES]

    def new(self, vouched: bytes) -> str:
        """A fresh id vouching for ``vouched`` (a :func:`hop`): 10 random bytes and their
        tag, as 32 lowercase hex characters."""
        body = os.urandom(_RANDOM_BYTES)
        return (body + self._tag(body, vouched)).hex()

    def vouches(self, jti: str, vouched: bytes) -> bool:
        """True iff ``jti`` is an id minted under this key for ``vouched`` (constant-time
        tag check)."""
        if not _SHAPE.fullmatch(jti):
            return False
        raw = bytes.fromhex(jti)
        body, tag = raw[:_RANDOM_BYTES], raw[_RANDOM_BYTES:]
        return hmac.compare_digest(tag, self._tag(body, vouched))
