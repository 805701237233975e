"""What an agent or a verifier keeps of its offline work until the broker has it: a bounded
queue of reports, each with its idempotency key, and the per-minute use counts of chains.

Sans I/O (the SDK and ``tasklease.verify`` send the batches and keep the spool): items
are taken in batches, and an item leaves the queue only when the broker answered for it
(accepted, already recorded, or refused for good); a batch that could not be sent stays,
in order. The keys are the broker's (docs/audit.md, "Reported late"): a derivation's is
its block's ``jti``, a use's its leaf's ``jti`` and the minute, so a batch sent twice
(an answer lost on the way) is recorded once.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from tasklease import forksafe
from tasklease.rules import attenuation

__all__ = [
    "MAX_BATCH",
    "USE_BUCKET",
    "PendingReport",
    "ReportQueue",
    "UseCounter",
    "chain_digest",
    "derivation_report",
    "outcome_settles",
    "request_body",
]

MAX_BATCH = 100
"""Items the broker takes in one request (``POST /v1/audit/offline``)."""
USE_BUCKET = 60
"""Uses are counted per minute of the time they happened."""


@dataclass(frozen=True, slots=True)
class PendingReport:
    """One item to report: ``kind`` ``derivation`` or ``use``, its key, and its body."""

    kind: str
    key: str
    body: Mapping[str, Any]

    def to_json(self) -> str:
        return json.dumps(
            {"kind": self.kind, "key": self.key, "body": dict(self.body)},
            separators=(",", ":"),
            sort_keys=True,
        )

    @classmethod
    def from_json(cls, line: str) -> PendingReport:
        """Raises ValueError for a line that is not a report (a torn write)."""
        value = json.loads(line)
        kind = value.get("kind") if isinstance(value, dict) else None
        key = value.get("key") if isinstance(value, dict) else None
        body = value.get("body") if isinstance(value, dict) else None
        if (
            kind not in ("derivation", "use")
            or not isinstance(key, str)
            or not isinstance(body, dict)
            or not isinstance(body.get("chain"), str)
        ):
            raise ValueError("not a report")
        return cls(str(kind), key, body)


def derivation_report(chain: str) -> PendingReport:
    """The report of the derivation of ``chain``'s last block.

    Raises:
        attenuation.ChainError: ``chain`` is not a chain with a block.
    """
    decoded = attenuation.decode(chain)
    if not decoded.blocks:
        raise attenuation.ChainError("a chain has at least one block", "format")
    return PendingReport("derivation", f"d:{chain_digest(chain)}", {"chain": chain})


def chain_digest(chain: str) -> str:
    """A chain's name in a queue or a count: the SHA-256 of its text (hex). Not its last
    block's ``jti``, which whoever derived the block chose: two chains may share one, and
    one chain's reports would be taken for the other's (the broker keys them the same
    way)."""
    return hashlib.sha256(chain.encode("utf-8")).hexdigest()


def outcome_settles(status: int) -> bool:
    """Whether an answer of ``status`` to a batch settles its items (they leave the
    queue): yes for success, and for a refusal of the batch itself that sending it again
    cannot change (400, 403, 413); no for anything that may pass later (401 until the
    token is renewed, 429, 5xx, no answer)."""
    return status < 300 or status in (400, 403, 413)


class ReportQueue:
    """Reports waiting for the broker, oldest first, at most ``limit`` (then the oldest is
    dropped and counted in :attr:`dropped`). An item already queued (same key) is not
    queued twice. Thread-safe."""

    def __init__(self, limit: int = 1000) -> None:
        if limit < 1:
            raise ValueError("limit must be at least 1")
        self._limit = limit
        self._items: OrderedDict[str, PendingReport] = OrderedDict()
        self._lock = threading.Lock()
        forksafe.track(self)
        self.dropped = 0

    def __len__(self) -> int:
        return len(self._items)

    def add(self, report: PendingReport) -> list[PendingReport]:
        """Queue ``report``; return what was dropped to make room (usually nothing)."""
        dropped: list[PendingReport] = []
        with self._lock:
            if report.key in self._items:
                return dropped
            self._items[report.key] = report
            while len(self._items) > self._limit:
                _, old = self._items.popitem(last=False)
                dropped.append(old)
            self.dropped += len(dropped)
        return dropped

    def batch(self, size: int = MAX_BATCH) -> list[PendingReport]:
        """The oldest ``size`` items (they stay queued until :meth:`settle`)."""
        with self._lock:
            return [item for _, item in zip(range(size), self._items.values(), strict=False)]

    def settle(self, keys: Iterable[str]) -> None:
        """The broker answered for these items: they leave the queue."""
        with self._lock:
            for key in keys:
                self._items.pop(key, None)

    def items(self) -> list[PendingReport]:
        with self._lock:
            return list(self._items.values())


def request_body(batch: Sequence[PendingReport]) -> dict[str, list[dict[str, Any]]]:
    """The ``POST /v1/audit/offline`` body of ``batch``."""
    return {
        "derivations": [dict(r.body) for r in batch if r.kind == "derivation"],
        "uses": [dict(r.body) for r in batch if r.kind == "use"],
    }


class UseCounter:
    """A verifier's acceptances of offline chains, counted per chain and minute.

    :meth:`closed` hands out the minutes that are over as reports (one per chain and
    minute, with its count, dated by the minute's first use: the chain was valid then)
    and forgets them; a minute is reported once, when it is over,
    so the broker's first record of it is the whole count. Thread-safe; at most
    ``limit`` open counts (then new leaves are not counted, and :attr:`dropped` says
    how many uses were not).
    """

    def __init__(self, limit: int = 10_000) -> None:
        self._limit = limit
        self._counts: dict[tuple[str, int], list[Any]] = {}
        self._lock = threading.Lock()
        forksafe.track(self)
        self.dropped = 0

    def count(self, chain: str, at: float) -> None:
        minute = int(at) - int(at) % USE_BUCKET
        key = (chain_digest(chain), minute)
        with self._lock:
            found = self._counts.get(key)
            if found is not None:
                found[1] += 1
            elif len(self._counts) < self._limit:
                self._counts[key] = [chain, 1, int(at)]
            else:
                self.dropped += 1

    def closed(self, now: float, *, everything: bool = False) -> list[PendingReport]:
        """Reports of the minutes over by ``now`` (or of all, ``everything``: at close)."""
        out: list[PendingReport] = []
        with self._lock:
            for (digest, minute), (chain, count, first) in list(self._counts.items()):
                if everything or minute + USE_BUCKET <= now:
                    del self._counts[(digest, minute)]
                    body = {"chain": chain, "occurred_at": first, "count": count}
                    out.append(PendingReport("use", f"u:{digest}:{minute}", body))
        return out
