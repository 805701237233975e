"""The audit log's events held to its Merkle tree and its signed checkpoint: the verdicts.

A hash chain alone cannot show an event that was edited in the database and followed by
a tail chained again: every link then holds. The Merkle tree (``core.audittree``) was
built from the hashes the events had when they were written, and the log key signed its
root in a checkpoint, which a writer of the database cannot sign again. So an event is
shown to be the one that was written only when its leaf, recomputed from its fields, is
in that tree; and a log is intact only when its events, walked, make the tree on record
and the tree of the latest checkpoint.

Two ways to hold them, one set of rules:

* :func:`walk_log` walks every event (``O(n)``): the chain, and the tree rebuilt from the
  events (:class:`RebuiltTree`) against the tree on record and the latest checkpoint;
* :func:`check_shown` checks a few events (``O(log n)`` each): each one's leaf, from its
  fields, by an inclusion proof to the root on record, and that root by a consistency
  proof to the latest checkpoint.

The verdicts (:func:`chain_problem`, :func:`tree_problem`, :func:`checkpoint_problem`)
are the same for ``tasklease audit verify`` (``--database``, ``--url``) and the console.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field

from tasklease.core.auditformat import ChainReport, content_hash, verify_chain
from tasklease.core.audittree import inclusion_proof, tile_of
from tasklease.core.errors import TaskleaseError
from tasklease.core.records import AuditEvent, AuditTree
from tasklease.core.rollback import extends
from tasklease.core.store import Store
from tasklease.rules.merkle import CompactRange, ProofError, inclusion_plan, leaf_hash
from tasklease.rules.merkle import verify_inclusion as merkle_inclusion
from tasklease.rules.note import (
    Checkpoint,
    NoteError,
    VerifierKey,
    parse_note,
    verify_checkpoint_note,
)

__all__ = [
    "Problem",
    "RebuiltTree",
    "ShownCheck",
    "WalkResult",
    "chain_problem",
    "check_shown",
    "checkpoint_problem",
    "latest_checkpoint",
    "tree_problem",
    "walk_log",
]


@dataclass(frozen=True, slots=True)
class Problem:
    """What is wrong with a log: ``label`` (``audit chain broken``, ``audit tree broken:``,
    ``CUT:``, ``FORK:``, ``checkpoint broken:``), then ``text``."""

    label: str
    text: str

    def __str__(self) -> str:
        return f"{self.label} {self.text}"


class RebuiltTree:
    """The Merkle tree of the events walked, rebuilt from their hashes, and its roots at
    the sizes wanted (those of the checkpoints and tree the events are held to)."""

    def __init__(self, wanted: Iterable[int]) -> None:
        self._compact = CompactRange()
        self._wanted = frozenset(wanted)
        self.roots: dict[int, bytes] = {}

    def add(self, event_hash: str) -> None:
        """Append the leaf of the event whose chain hash is ``event_hash``."""
        try:
            leaf = leaf_hash(bytes.fromhex(event_hash))
        except ValueError:  # not hex: the chain walk names this event broken
            leaf = leaf_hash(event_hash.encode())
        compact = self._compact
        compact.append(leaf)
        if compact.size in self._wanted:
            self.roots[compact.size] = compact.root()


def chain_problem(report: ChainReport) -> Problem | None:
    """The first broken link ``report`` found, or None."""
    if report.ok:
        return None
    return Problem(
        "audit chain broken",
        f"at {report.broken_at}: {report.reason} ({report.checked} events verified before it)",
    )


def tree_problem(
    size: int, root: bytes, rebuilt: RebuiltTree, checked: int, what: str
) -> Problem | None:
    """None iff the ``checked`` events walked make the tree ``what`` names (``size``
    leaves, ``root``): a checkpoint, or the tree on record."""
    if size and (size > checked or rebuilt.roots.get(size) != root):
        return Problem(
            "audit tree broken:",
            f"{what} (size {size}) is not the tree of the chain's events",
        )
    return None


def checkpoint_problem(
    checkpoint: Checkpoint, rebuilt: RebuiltTree, checked: int, *, holds: str, first: str
) -> Problem | None:
    """``CUT`` or ``FORK`` unless the first ``checkpoint.size`` of the ``checked`` events
    walked make the tree ``checkpoint`` signed. ``holds`` and ``first`` name where the
    events came from ("the database holds", "the database's first")."""
    if checkpoint.size > checked:
        return Problem(
            "CUT:",
            f"{holds} {checked} events, fewer than the {checkpoint.size} the checkpoint "
            "covers: the log was cut, or this is a copy older than the checkpoint",
        )
    if checkpoint.size and rebuilt.roots.get(checkpoint.size) != checkpoint.root:
        return Problem(
            "FORK:",
            f"{first} {checkpoint.size} events are not the ones the checkpoint covers: the "
            "log was rewritten",
        )
    return None


def latest_checkpoint(
    store: Store, log_keys: Sequence[VerifierKey]
) -> tuple[Checkpoint | None, Problem | None]:
    """The log's latest final checkpoint (None before the first), once its signature by
    one of ``log_keys`` verifies; else a problem: a checkpoint on record the log key did
    not sign was written by someone else."""
    record = store.get_checkpoint("final")
    if record is None:
        return None, None
    try:
        note = parse_note(record.note)
        return verify_checkpoint_note(note, log_keys), None
    except NoteError as exc:
        return None, Problem(
            "checkpoint broken:",
            f"the latest checkpoint on record (size {record.size}) is not one the log key "
            f"signed ({exc})",
        )


# --- a few events, O(log n) each -----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ShownCheck:
    """A few events held to the tree on record, and that tree to the latest checkpoint.

    ``altered`` maps the ``seq`` of each event not shown to be in the tree to why;
    ``problem`` says when the tree itself is not the signed one's (or that is unsigned).
    """

    tree: AuditTree | None
    checkpoint: Checkpoint | None
    altered: dict[int, str] = field(default_factory=dict)
    problem: Problem | None = None

    @property
    def ok(self) -> bool:
        return not self.altered and self.problem is None


class _Tiles:
    """The tiles some proofs need, read at once (a :class:`~core.audittree.TileReader`)."""

    def __init__(self, store: Store, keys: set[tuple[int, int]]) -> None:
        self._tiles = store.audit_tiles(sorted(keys)) if keys else {}

    def audit_tiles(self, keys: Sequence[tuple[int, int]]) -> dict[tuple[int, int], bytes]:
        return {key: self._tiles[key] for key in keys if key in self._tiles}


def check_shown(
    store: Store, events: Sequence[AuditEvent], log_keys: Sequence[VerifierKey]
) -> ShownCheck:
    """Hold ``events`` (read from ``store`` before this call) to the Merkle tree on record:
    each one's leaf, recomputed from its fields, must lead by its inclusion proof to the
    tree's root; and that tree must extend the latest checkpoint (a consistency proof).
    ``O(log n)`` per event, the tiles read once."""
    checkpoint, problem = latest_checkpoint(store, log_keys)
    tree = store.audit_tree()  # after the events and the checkpoint: it holds them both
    size = tree.size if tree is not None else 0
    if problem is None and checkpoint is not None and not extends(store, tree, checkpoint):
        problem = Problem(
            "audit tree broken:",
            f"the tree on record (size {size}) does not extend the latest checkpoint "
            f"(size {checkpoint.size}): the log was rewritten",
        )
    altered: dict[int, str] = {}
    inside = [e for e in events if 0 < e.seq <= size]
    for event in events:
        if not 0 < event.seq <= size:
            altered[event.seq] = f"not in the Merkle tree on record (size {size})"
    reader = _Tiles(
        store,
        {
            tile_of(node)[0]
            for e in inside
            for nodes in inclusion_plan(e.seq - 1, size)
            for node in nodes
        },
    )
    for event in inside:
        try:
            leaf = leaf_hash(bytes.fromhex(content_hash(event)))
            proof = inclusion_proof(reader, tree, event.seq - 1, size)
            merkle_inclusion(leaf, event.seq - 1, size, proof, tree.root if tree else b"")
        except ProofError:
            altered[event.seq] = (
                f"its fields and prev_hash are not those of leaf {event.seq - 1} of the "
                "Merkle tree on record: it, or an event before it, was edited"
            )
        except (ValueError, TaskleaseError) as exc:
            altered[event.seq] = str(exc)
    return ShownCheck(tree, checkpoint, altered, problem)


# --- every event, O(n) ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class WalkResult:
    """One walk of the whole log: when it started and ended (Unix seconds), the events
    it walked, the chain's head, the sizes of the trees they were held to, and the first
    problem met (None: intact)."""

    started_at: float
    finished_at: float
    checked: int
    head_hash: str
    tree_size: int
    checkpoint_size: int
    problem: Problem | None

    @property
    def ok(self) -> bool:
        return self.problem is None


def walk_log(
    store: Store,
    log_keys: Sequence[VerifierKey],
    now: Callable[[], float],
    *,
    progress: Callable[[int], None] | None = None,
) -> WalkResult:
    """Walk every event of ``store``'s log: the hash chain, and the Merkle tree rebuilt
    from the events, which must be the tree on record and the latest checkpoint's
    (``tasklease audit verify --database`` and ``--url`` hold them the same way)."""
    started = now()
    checkpoint, unsigned = latest_checkpoint(store, log_keys)
    tree = store.audit_tree()  # after the checkpoint, before the events: the walk covers both
    tree_size = tree.size if tree is not None else 0
    checkpoint_size = checkpoint.size if checkpoint is not None else 0
    rebuilt = RebuiltTree({tree_size, checkpoint_size})

    def leaves(events: Iterator[AuditEvent]) -> Iterator[AuditEvent]:
        add = rebuilt.add
        for event in events:
            add(event.hash)
            yield event

    report = verify_chain(leaves(store.iter_audit()), progress=progress)
    checked = report.checked
    problem = (
        chain_problem(report)
        or (tree and tree_problem(tree.size, tree.root, rebuilt, checked, "the tree on record"))
        or unsigned
        or (
            checkpoint
            and tree_problem(
                checkpoint.size, checkpoint.root, rebuilt, checked, "the latest checkpoint"
            )
        )
        or None
    )
    return WalkResult(
        started, now(), checked, report.head_hash, tree_size, checkpoint_size, problem
    )
