"""Four-level revocation and the in-memory index every validation consults.

Levels and what they match (``revoked_at`` whole seconds; a token's *registration time*
is its ``oiat``, the issue time of its registration's first token, which renewals,
resumptions, delegations and exchanges carry on unchanged, or its ``iat`` if earlier):

============  ===========================================================================
``token``     the token whose ``jti`` is the target
``agent``     tokens whose ``sub`` is the target, of a registration made at or before
              ``revoked_at``, and every token delegated from it (the target appears in
              the delegation chain)
``task``      tokens whose ``task_id`` is the target, of a registration made at or before
              ``revoked_at``; and tokens held by, or delegated through, an agent of the
              target task (its SPIFFE ID names it, in the holder's trust domain) that
              provably registered by then: a delegated or exchanged token issued, or a
              hop delegated, at or before ``revoked_at``
``chain``     tokens delegated from the target (the target appears in the delegation
              chain) by a delegation made at or before ``revoked_at`` (the hop's
              ``delegated_at``); the target's own tokens live on, and so do its later
              delegations. A target that is not a SPIFFE ID names a lineage ancestor (a
              token's ``jti``, a grant id, ``renewal:<grant id>`` or ``app:<app_id>``):
              it matches every token whose ``lineage`` claim lists it, whenever issued
              (``core.kernel``)
============  ===========================================================================

Matching by the registration, not by the token's own ``iat``, is what makes an agent or
task revocation end the successors that another worker or replica minted in the moments
before the revocation reached it: they carry the registration's time, and are matched as
soon as the entry arrives.

The times an entry is compared with were read from the clock of whichever process made
the registration, token or hop, which may run up to ``clock_skew`` ahead of the revoking
process's (another replica, or this one before its clock stepped back). So an entry that
matches by a time (:func:`matches_by_time`: agent and task entries, a chain entry on an
agent) is dated ``clock_skew`` past its revoking clock's second (``Kernel.revocation_entry``,
where every revoking site dates its entries): it covers everything made before it by any
clock within the tolerance, and what is made for its target within ``clock_skew`` after it
is ended too (such an issuance is refused, asked to come back when past it).

Because agent, task and chain entries only match what was made before them, a revocation
can never lock a subject out for ever (revoking ``admin`` kills today's admin tokens, not
tomorrow's), and every entry has an expiry after which nothing it could match is still
valid: a registration's tokens end by its ``renewal_ceiling`` and each token within
``max_ttl``, so an entry expires at ``revoked_at`` + the longer of the two + skew
(``Kernel.revocation_expiry``). Expired entries are pruned from memory and storage, so
revocation state stays bounded.

Lookups are a handful of dictionary probes: no I/O on the validation path.
"""

from __future__ import annotations

import heapq
import math
import threading
from collections.abc import Iterable, Iterator, Sequence
from datetime import datetime
from typing import Protocol

from tasklease import forksafe
from tasklease.core.records import RevocationRecord
from tasklease.core.spiffe import parse_agent_id

__all__ = [
    "LEVELS",
    "RevocableToken",
    "RevocationIndex",
    "ends",
    "feed_time",
    "matches_by_time",
]

LEVELS = ("token", "agent", "task", "chain")
_LAST_SECOND = 253_402_300_799  # 9999-12-31T23:59:59Z


def feed_time(value: object) -> float | None:
    """A revocation feed entry's time as another process wrote it (``expires_at``,
    ``sent_at``; a Unix time): an int or a float, never a bool or NaN; None when it is no
    such number. Compared before it is converted: JSON integers are read exactly, and
    one no float holds (``float`` raises ``OverflowError``) is still a time. One past the
    year 9999 is ``inf`` (an entry kept for ever), one before 1970 is 0."""
    if type(value) is not int and type(value) is not float:
        return None
    if type(value) is float and math.isnan(value):
        return None
    if value > _LAST_SECOND:
        return math.inf
    return float(value) if value >= 0 else 0.0


def matches_by_time(level: str, target: str) -> bool:
    """Whether an entry at ``level`` on ``target`` matches only what was made at or before
    its ``revoked_at`` (a registration, a token, a hop, by the clock that made it): agent
    and task entries, and a chain entry on an agent (a SPIFFE ID; one on a lineage id
    matches whenever issued, and a token entry by its ``jti``)."""
    return level in ("agent", "task") or (level == "chain" and target.startswith("spiffe://"))


def ends(entry: RevocationRecord, claims: RevocableToken) -> bool:
    """Whether ``entry`` alone ends ``claims``, by :meth:`RevocationIndex.match`'s rule."""
    index = RevocationIndex()
    index.apply([entry])
    return index.match(claims) is not None


class _Hop(Protocol):
    """A delegation record; the broker's also say when (``delegated_at``, RFC 3339)."""

    @property
    def agent(self) -> str: ...


class RevocableToken(Protocol):
    """What matching needs of a token: the broker's ``Claims`` and the verifier's
    ``VerifiedToken`` both qualify, so the two share this one index (which imports only
    the standard library, ``core.records`` and ``core.spiffe``). Those two, and an
    offline chain's probes, also say when their registration was made (``oiat``); a
    probe that does not is matched by its ``iat``."""

    @property
    def jti(self) -> str: ...
    @property
    def sub(self) -> str: ...
    @property
    def iat(self) -> int: ...
    @property
    def task_id(self) -> str: ...
    @property
    def delegation_chain(self) -> Sequence[_Hop]: ...
    @property
    def lineage(self) -> Sequence[str]: ...


class RevocationIndex:
    """The revocation entries currently in force, keyed for O(1) matching."""

    def __init__(self) -> None:
        self._levels: dict[str, dict[str, tuple[int, float]]] = {lv: {} for lv in LEVELS}
        self._expiry: list[tuple[float, str, str]] = []
        self._lock = threading.Lock()
        self.last_seq = 0
        forksafe.track(self)

    def __len__(self) -> int:
        return sum(len(d) for d in self._levels.values())

    def apply(self, records: Iterable[RevocationRecord]) -> None:
        """Add or widen entries (idempotent; a later ``revoked_at`` widens an entry)."""
        with self._lock:
            for rec in records:
                level = self._levels.get(rec.level)
                if level is None:
                    continue
                old = level.get(rec.target)
                if old is None or rec.revoked_at > old[0] or rec.expires_at > old[1]:
                    new = (
                        max(rec.revoked_at, old[0]) if old else rec.revoked_at,
                        max(rec.expires_at, old[1]) if old else rec.expires_at,
                    )
                    level[rec.target] = new
                    heapq.heappush(self._expiry, (new[1], rec.level, rec.target))
                self.last_seq = max(self.last_seq, rec.seq)

    def rewind(self, seq: int) -> None:
        """Continue from ``seq`` (the store's last, below ours: it went back in time).
        Entries held are kept: one the store lost still ends what it ended."""
        with self._lock:
            self.last_seq = seq

    def match(self, claims: RevocableToken) -> str | None:
        """The level at which ``claims`` is revoked, or ``None`` if it is not."""
        levels = self._levels
        if claims.jti in levels["token"]:
            return "token"
        hit = levels["agent"].get(claims.sub)
        if hit is not None and _registered(claims) <= hit[0]:
            return "agent"
        tasks = levels["task"]
        if tasks:
            level = _task_level(tasks, claims)
            if level is not None:
                return level
        if claims.lineage:
            chains = levels["chain"]
            for ancestor in claims.lineage:
                # Lineage ids are unique (random jtis, app ids): no iat condition, so a
                # descendant issued in a race with its ancestor's revocation dies too.
                if ancestor in chains:
                    return "chain"
        if claims.delegation_chain:
            agents, chains = levels["agent"], levels["chain"]
            for record in claims.delegation_chain:
                hit = agents.get(record.agent)
                if hit is not None and _registered(claims) <= hit[0]:
                    return "agent"
                hit = chains.get(record.agent)
                if hit is not None and _delegated(record, claims.iat) <= hit[0]:
                    return "chain"
        return None

    @staticmethod
    def keys(claims: RevocableToken) -> set[tuple[str, str]]:
        """Every ``(level, target)`` entry :meth:`match` could find for ``claims``: what a
        live read of the store must fetch to decide as the index would."""
        found = {("token", claims.jti), ("agent", claims.sub)}
        found.update(("task", task) for task, _ in _task_bounds(claims))
        found.update(("chain", ancestor) for ancestor in claims.lineage)
        for record in claims.delegation_chain:
            found.update((("agent", record.agent), ("chain", record.agent)))
        return found

    def entries(self, now: float) -> list[RevocationRecord]:
        """Every entry that can still match a valid token at ``now`` (``seq`` 0: the
        index does not keep where the store numbered it)."""
        with self._lock:
            return [
                RevocationRecord(level, target, revoked_at, expires_at)
                for level, held in self._levels.items()
                for target, (revoked_at, expires_at) in held.items()
                if expires_at > now
            ]

    def revoked_at(self, level: str, target: str) -> int | None:
        """The ``revoked_at`` of the entry at ``level`` on ``target``, or None if none."""
        hit = self._levels.get(level, {}).get(target)
        return None if hit is None else hit[0]

    def ended_ancestor(self, lineage: Sequence[str]) -> str | None:
        """The first of ``lineage`` whose end (a chain-level entry) ends its descendants."""
        chains = self._levels["chain"]
        for ancestor in lineage:
            if ancestor in chains:
                return ancestor
        return None

    def prune(self, now: float) -> int:
        """Drop entries that can no longer match a valid token; return how many."""
        removed = 0
        with self._lock:
            while self._expiry and self._expiry[0][0] <= now:
                _, level, target = heapq.heappop(self._expiry)
                current = self._levels[level].get(target)
                if current is not None and current[1] <= now:
                    del self._levels[level][target]
                    removed += 1
        return removed


def _task_level(tasks: dict[str, tuple[int, float]], claims: RevocableToken) -> str | None:
    """``"task"`` if a task entry matches ``claims`` (:func:`_task_bounds`)."""
    for task, made in _task_bounds(claims):
        hit = tasks.get(task)
        if hit is not None and made <= hit[0]:
            return "task"
    return None


def _task_bounds(claims: RevocableToken) -> Iterator[tuple[str, int]]:
    """Each task whose entry would end ``claims``, with the time by which what it names
    was registered (an entry matches only what was registered at or before it: task ids
    are used again).

    Its ``task_id``, by :func:`_registered`. Then the tasks of the agents its authority
    passed through, named by their SPIFFE IDs: the holder of a delegated or exchanged
    token, registered by the token's ``iat``, and each hop's delegator, by the hop's
    ``delegated_at``. Only agents of the holder's trust domain (of any, for a holder
    that is not an agent): another domain's tasks are its own (its entries arrive as
    ``fed:<domain>:…`` chain entries). A probe that says no ``iat`` (an offline block's
    standing probe) proves no time and gets none.
    """
    if claims.task_id:
        yield claims.task_id, _registered(claims)
    if claims.iat <= 0:
        return
    holder = parse_agent_id(claims.sub)
    if holder is not None and holder.task_id != claims.task_id:
        yield holder.task_id, claims.iat
    domain = holder.trust_domain if holder is not None else None
    for record in claims.delegation_chain:
        agent = parse_agent_id(record.agent)
        if agent is not None and agent.trust_domain == (domain or agent.trust_domain):
            yield agent.task_id, _delegated(record, claims.iat)


def _registered(claims: RevocableToken) -> int:
    """When ``claims``' registration was made: its ``oiat``, unless unknown (absent, 0)
    or later than the token's own ``iat`` (a value only a foreign issuer could send)."""
    iat, oiat = claims.iat, getattr(claims, "oiat", 0)
    return oiat if type(oiat) is int and 0 < oiat < iat else iat


def _delegated(record: _Hop, iat: int) -> int:
    """When the hop ``record`` was made, in whole seconds: its ``delegated_at``, never
    later than the token's ``iat`` (a hop is made before the token that carries it, and
    a record re-signed from another domain says what that domain wrote); the ``iat``
    itself for an offline block's holder and for a time that does not parse or names no
    offset (read in the host's zone, brokers and verifiers would disagree)."""
    text = getattr(record, "delegated_at", None)
    if isinstance(text, str) and text:
        try:
            when = datetime.fromisoformat(text)
            if when.utcoffset() is None:
                return iat
            return min(int(when.timestamp()), iat)
        except (ValueError, OverflowError, OSError):
            return iat
    return iat
