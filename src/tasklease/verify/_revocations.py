"""The verifier's copy of the broker's revocation index.

Same entries, same matching rules as ``tasklease.core.revocation.RevocationIndex`` (which
imports the server's token module); ``tests/verify`` runs both over the same cases.
"""

from __future__ import annotations

import heapq
import threading
from collections.abc import Iterable, Mapping
from typing import Any

from tasklease.verify._claims import VerifiedToken

__all__ = ["LEVELS", "RevocationIndex", "parse_entry"]

LEVELS = ("token", "agent", "task", "chain")


def parse_entry(data: Mapping[str, Any]) -> tuple[str, str, int, float, int]:
    """(level, target, revoked_at, expires_at, seq) of one feed entry; ValueError if bad."""
    level, target = data.get("level"), data.get("target")
    revoked_at, expires_at, seq = data.get("revoked_at"), data.get("expires_at"), data.get("seq")
    if type(level) is not str or type(target) is not str or not target:
        raise ValueError("revocation entry without level or target")
    if type(revoked_at) is not int or type(seq) is not int:
        raise ValueError("revocation entry with a bad revoked_at or seq")
    if not isinstance(expires_at, int | float) or isinstance(expires_at, bool):
        raise ValueError("revocation entry with a bad expires_at")  # noqa: TRY004
    return level, target, revoked_at, float(expires_at), seq


class RevocationIndex:
    """Entries in force, keyed for O(1) matching; thread-safe writes, lock-free reads."""

    def __init__(self) -> None:
        self._levels: dict[str, dict[str, tuple[int, float]]] = {lv: {} for lv in LEVELS}
        self._expiry: list[tuple[float, str, str]] = []
        self._lock = threading.Lock()
        self.last_seq = 0

    def __len__(self) -> int:
        return sum(len(d) for d in self._levels.values())

    def apply(self, entries: Iterable[tuple[str, str, int, float, int]]) -> None:
        """Add or widen entries (idempotent; later ``revoked_at``/``expires_at`` widen)."""
        with self._lock:
            for level_name, target, revoked_at, expires_at, seq in entries:
                level = self._levels.get(level_name)
                if level is None:
                    continue  # a level this verifier does not know: nothing it can match
                old = level.get(target)
                if old is None or revoked_at > old[0] or expires_at > old[1]:
                    new = (
                        max(revoked_at, old[0]) if old else revoked_at,
                        max(expires_at, old[1]) if old else expires_at,
                    )
                    level[target] = new
                    heapq.heappush(self._expiry, (new[1], level_name, target))
                self.last_seq = max(self.last_seq, seq)

    def match(self, token: VerifiedToken) -> str | None:
        """The level at which ``token`` is revoked, or ``None``."""
        levels = self._levels
        if token.jti in levels["token"]:
            return "token"
        iat = token.iat
        hit = levels["agent"].get(token.sub)
        if hit is not None and iat <= hit[0]:
            return "agent"
        if token.task_id:
            hit = levels["task"].get(token.task_id)
            if hit is not None and iat <= hit[0]:
                return "task"
        if token.delegation_chain:
            agents, chains = levels["agent"], levels["chain"]
            for hop in token.delegation_chain:
                hit = agents.get(hop.agent)
                if hit is not None and iat <= hit[0]:
                    return "agent"
                hit = chains.get(hop.agent)
                if hit is not None and iat <= hit[0]:
                    return "chain"
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
