"""``tasklease audit checkpoint|prove|rotate-log-key`` and ``audit verify --checkpoint``.

Everything that proves something is checked here, on this machine, with
:mod:`tasklease.verify` (the broker's answers are only material): a checkpoint against
the log keys given with ``--log-key`` (or, failing that, the keys the broker serves, which
is said), an event's inclusion in it, a newer checkpoint's consistency with an older one,
or a database's events against a checkpoint (docs/audit.md).
"""

from __future__ import annotations

import hashlib
import json
import math
import secrets
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape

from tasklease.cli._common import (
    EXIT_FAILED,
    AdminSecretOpt,
    ForceOpt,
    ProfileOpt,
    UrlOpt,
    admin_client,
    broker_errors,
    err,
    fail,
    out,
    print_json,
    write_private,
)
from tasklease.localfiles import read_regular

if TYPE_CHECKING:
    from tasklease.client import AdminClient
    from tasklease.core.auditcheck import Problem, RebuiltTree
    from tasklease.core.auditformat import ChainReport
    from tasklease.core.records import AuditEvent
    from tasklease.core.store import Store
    from tasklease.verify import AuditProofError, Checkpoint

__all__ = [
    "NO_WITNESSES",
    "LogKeyOpt",
    "OnlineCheckpoints",
    "QuorumOpt",
    "WitnessOpt",
    "Witnessed",
    "chain_verdict",
    "checkpoint_verdict",
    "online_checkpoints",
    "read_checkpoint",
    "register",
    "tree_verdict",
    "verify_database",
    "witnessed",
]


def _log_keys_given(values: list[str] | None) -> list[str] | None:
    """``--log-key`` values, each read as a verifier key before anything is fetched: a
    malformed one is a usage error (exit 2) naming the flag, not a failed check (1)."""
    from tasklease.rules.note import NoteError, VerifierKey

    for value in values or ():
        try:
            VerifierKey.parse(value)
        except NoteError as exc:
            shown = value if len(value) <= 80 else f"{value[:77]}..."
            raise typer.BadParameter(f"{shown!r} is not a log verifier key: {exc}") from None
    return values


LogKeyOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--log-key",
        metavar="VKEY",
        help="A verifier key (vkey) of the log, from a channel you trust; repeat for "
        "several. Without it, the keys the broker serves are used (and that is said).",
        callback=_log_keys_given,
    ),
]


def _witness_keys_given(values: list[str] | None) -> list[str] | None:
    """``--witness`` values, each read as a witness's cosignature key (type 0x04) before
    anything is fetched: a malformed one is a usage error (exit 2) naming the flag."""
    from tasklease.rules.note import COSIGNATURE, NoteError, VerifierKey

    for value in values or ():
        shown = value if len(value) <= 80 else f"{value[:77]}..."
        try:
            key = VerifierKey.parse(value)
        except NoteError as exc:
            raise typer.BadParameter(f"{shown!r} is not a witness verifier key: {exc}") from None
        if key.sig_type != COSIGNATURE:
            raise typer.BadParameter(
                f"{shown!r} is not a witness's key: a witness cosigns with a type 0x04 key"
            )
    return values


WitnessOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--witness",
        metavar="VKEY",
        help="A witness's cosignature key (vkey), from a channel you trust; repeat for "
        "several. The log's checkpoint must then be cosigned by --quorum of them: a "
        "history the broker did not show the witnesses is refused.",
        callback=_witness_keys_given,
    ),
]

QuorumOpt = Annotated[
    int | None,
    typer.Option(
        "--quorum",
        metavar="K",
        min=1,
        help="How many of the --witness keys must have cosigned the checkpoint "
        "(default: all of them; each key counts once).",
    ),
]


@dataclass(frozen=True, slots=True)
class Witnessed:
    """The witnesses whose cosignatures a checkpoint must carry (``--witness``,
    ``--quorum``): none asked, nothing is demanded."""

    keys: tuple[str, ...] = ()
    quorum: int = 0


NO_WITNESSES = Witnessed()


def witnessed(witnesses: list[str] | None, quorum: int | None) -> Witnessed:
    """``--witness`` and ``--quorum`` as one demand; a quorum that no set of the keys
    given can meet, or one without witnesses, is a usage error (exit 2)."""
    from tasklease.rules.note import VerifierKey

    keys = tuple(witnesses or ())
    if not keys:
        if quorum is not None:
            fail("--quorum counts the --witness keys: give them")
        return Witnessed()
    distinct = len({VerifierKey.parse(k).public_key for k in keys})
    wanted = distinct if quorum is None else quorum
    if wanted > distinct:
        fail(f"--quorum {wanted} is more than the {distinct} distinct --witness keys given")
    return Witnessed(keys, wanted)


def _checked(
    note: str, keys: list[str], witnesses: Witnessed, *, origin: str | None = None
) -> Checkpoint:
    """``note``'s checkpoint once it is signed by one of ``keys`` and cosigned by the
    witnesses asked for (raises ``AuditProofError``)."""
    from tasklease.verify import verify_checkpoint

    return verify_checkpoint(
        note, keys, witnesses=witnesses.keys, quorum=witnesses.quorum, origin=origin
    )


def _trusted_keys(admin: AdminClient | None, log_keys: list[str] | None) -> list[str]:
    if log_keys:
        return log_keys
    if admin is None:
        fail("give the log's verifier key with --log-key")
    served = admin.audit_log_keys().get("keys") or []
    err.print(
        "[yellow]warning:[/] checking against the log keys the broker serves; pin them "
        "with --log-key for a check that does not trust the broker",
        highlight=False,
        markup=True,
    )
    return [str(k) for k in served]


def _read(path: Path, what: str) -> str:
    """The text of a checkpoint or proof bundle the user named; exit 2 if it cannot be
    read or is not text (a binary file handed by mistake)."""
    try:
        return read_regular(path).decode("utf-8")
    except OSError as exc:
        fail(f"cannot read {what} {path}: {exc.strerror or exc}")
    except UnicodeDecodeError:
        fail(f"{what} {path} is not UTF-8 text: is it the right file?")


def read_checkpoint(path: Path) -> str:
    """The text of a checkpoint file the user named (exit 2 as :func:`_read`)."""
    return _read(path, "checkpoint")


def _proof_failed(exc: AuditProofError) -> typer.Exit:
    # A reason may quote what a server served (an origin, an event's field): its
    # terminal controls are escaped by the console (``_Screen``).
    reason = escape(exc.reason)
    err.print(f"[bold red]FAILED:[/] {reason}", highlight=False, markup=True)
    return typer.Exit(EXIT_FAILED)


def audit_checkpoint(
    output: Annotated[
        Path | None,
        typer.Option("--output", "-o", metavar="FILE", help="Write it to this new file (0600)."),
    ] = None,
    force: ForceOpt = False,
    log_key: LogKeyOpt = None,
    witness: WitnessOpt = None,
    quorum: QuorumOpt = None,
    url: UrlOpt = None,
    admin_secret: AdminSecretOpt = None,
    profile: ProfileOpt = None,
) -> None:
    """Fetch the log's latest final checkpoint, check its signature, print or save it.

    Keep it: a later `audit verify --checkpoint FILE` proves the log only grew since.
    With --witness it must also be cosigned by the witnesses (--quorum of them).
    """
    from tasklease.verify import AuditProofError

    witnesses = witnessed(witness, quorum)
    with broker_errors(), admin_client(url, admin_secret, profile) as admin:
        note = admin.audit_checkpoint()
        keys = _trusted_keys(admin, log_key)
    try:
        checkpoint = _checked(note, keys, witnesses)
    except AuditProofError as exc:
        raise _proof_failed(exc) from None
    if output is None:
        out.print(note, end="", highlight=False)
        return
    write_private(output, note, force=force)
    out.print(
        f"checkpoint of {checkpoint.origin} at size {checkpoint.size} written to {output}",
        highlight=False,
    )


def audit_log_keys(
    url: UrlOpt = None,
    admin_secret: AdminSecretOpt = None,
    profile: ProfileOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the answer as JSON.")] = False,
) -> None:
    """Print the log's verifier keys (vkeys), the active one first.

    Hand them to auditors and witnesses through a channel they trust.
    """
    with broker_errors(), admin_client(url, admin_secret, profile) as admin:
        answer = admin.audit_log_keys()
    if as_json:
        print_json(answer)
        return
    for key in answer.get("keys") or []:
        out.print(str(key), highlight=False, soft_wrap=True)


def audit_prove(
    event_id: Annotated[
        str | None, typer.Argument(help="The event, as evt-000042 or 42.", show_default=False)
    ] = None,
    checkpoint_file: Annotated[
        Path | None,
        typer.Option(
            "--checkpoint", metavar="FILE", help="Prove against this checkpoint (default: latest)."
        ),
    ] = None,
    bundle: Annotated[
        Path | None,
        typer.Option(
            metavar="BUNDLE", help="Verify this proof bundle offline instead (needs --log-key)."
        ),
    ] = None,
    output: Annotated[
        Path | None,
        typer.Option(
            "--output",
            "-o",
            metavar="BUNDLE",
            help="Write the proof bundle (JSON) to this new file (0600).",
        ),
    ] = None,
    force: ForceOpt = False,
    log_key: LogKeyOpt = None,
    witness: WitnessOpt = None,
    quorum: QuorumOpt = None,
    url: UrlOpt = None,
    admin_secret: AdminSecretOpt = None,
    profile: ProfileOpt = None,
) -> None:
    """Prove that an event is in the log: its inclusion in a signed checkpoint.

    The event's hash is recomputed from its fields and the proof checked here. With
    --output the event, the checkpoint and the proof go to a bundle anyone can check
    offline with --bundle (or tasklease.verify.verify_proof_bundle). With --witness the
    checkpoint must also be cosigned by the witnesses (--quorum of them).
    """
    from tasklease.bounds import json_document
    from tasklease.verify import AuditProofError, verify_event_inclusion, verify_proof_bundle

    witnesses = witnessed(witness, quorum)
    if bundle is not None:
        if not log_key:
            fail("--bundle needs the log's verifier key: --log-key")
        try:
            data: Any = json_document(_read(bundle, "proof bundle"))
            checkpoint, index = verify_proof_bundle(
                data, log_key, witnesses=witnesses.keys, quorum=witnesses.quorum
            )
        except AuditProofError as exc:
            raise _proof_failed(exc) from None
        except ValueError:
            fail(f"{bundle} is not a JSON proof bundle")
        out.print(_proved(data["event"], index, checkpoint), highlight=False)
        return
    if event_id is None:
        fail("name the event to prove (or give --bundle)")
    seq = _seq(event_id)
    with broker_errors(), admin_client(url, admin_secret, profile) as admin:
        note = _read(checkpoint_file, "checkpoint") if checkpoint_file else admin.audit_checkpoint()
        keys = _trusted_keys(admin, log_key)
        try:
            checkpoint = _checked(note, keys, witnesses)
        except AuditProofError as exc:
            raise _proof_failed(exc) from None
        if seq > checkpoint.size:
            fail(
                f"evt-{seq:06d} is not covered by the checkpoint (size {checkpoint.size}) yet",
                EXIT_FAILED,
                hint="wait for the next checkpoint, or fetch it with `tasklease audit checkpoint`",
            )
        event = admin.audit_event(seq)
        proof = admin.audit_inclusion_proof(seq - 1, checkpoint.size)["proof"]
    try:
        index = verify_event_inclusion(event, proof, checkpoint)
    except AuditProofError as exc:
        raise _proof_failed(exc) from None
    if output is not None:
        bundle_data = {"checkpoint": note, "event": event, "proof": proof}
        bundle_text = json.dumps(bundle_data, indent=1, ensure_ascii=False) + "\n"
        write_private(output, bundle_text, force=force)
    out.print(_proved(event, index, checkpoint), highlight=False)


def _seq(event_id: str) -> int:
    text = event_id.removeprefix("evt-")
    if not (text.isascii() and text.isdigit()) or int(text) < 1:
        fail(f"{event_id!r} is not an event id (evt-000042 or 42)")
    return int(text)


def _proved(event: dict[str, Any], index: int, checkpoint: Checkpoint) -> str:
    return (
        f"PROVED: evt-{index + 1:06d} ({event.get('event_type')}) is leaf {index} of "
        f"{checkpoint.origin} at size {checkpoint.size}"
    )


def audit_rotate_log_key(
    url: UrlOpt = None,
    admin_secret: AdminSecretOpt = None,
    profile: ProfileOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the answer as JSON.")] = False,
) -> None:
    """Make a new log key sign the checkpoints (give its vkey to the witnesses first)."""
    with broker_errors(), admin_client(url, admin_secret, profile) as admin:
        answer = admin.rotate_audit_log_key()
    if as_json:
        print_json(answer)
        return
    out.print(f"log key rotated: {answer['key']} (was {answer['previous_key']})", highlight=False)


# -- audit verify: the events against the checkpoints -------------------------------------


def _verdict(problem: Problem | None) -> None:
    """Exit 1 naming ``problem`` (the rules are ``core.auditcheck``'s), if there is one."""
    if problem is None:
        return
    err.print(
        f"[bold red]{escape(problem.label)}[/] {escape(problem.text)}",
        highlight=False,
        markup=True,
    )
    raise typer.Exit(EXIT_FAILED)


def checkpoint_verdict(
    checkpoint: Checkpoint, rebuilt: RebuiltTree, checked: int, *, holds: str, first: str
) -> None:
    """Exit 1 with ``CUT`` or ``FORK`` unless the first ``checkpoint.size`` of the
    ``checked`` events walked make the tree ``checkpoint`` signed. ``holds`` and ``first``
    name where the events came from ("the database holds", "the database's first")."""
    from tasklease.core.auditcheck import checkpoint_problem

    _verdict(checkpoint_problem(checkpoint, rebuilt, checked, holds=holds, first=first))


def tree_verdict(size: int, root: bytes, rebuilt: RebuiltTree, checked: int, what: str) -> None:
    """Exit 1 (``audit tree broken``) unless the events walked make the tree ``what``
    names (``size`` leaves, ``root``): the broker's checkpoint, or the tree on record."""
    from tasklease.core.auditcheck import tree_problem

    _verdict(tree_problem(size, root, rebuilt, checked, what))


@dataclass(frozen=True, slots=True)
class OnlineCheckpoints:
    """What ``audit verify --url`` holds the broker's events to: its latest final
    checkpoint (None before the first) and its note, and the checkpoint the user kept."""

    latest: Checkpoint | None
    latest_note: str
    held: Checkpoint | None

    @property
    def sizes(self) -> set[int]:
        return {c.size for c in (self.latest, self.held) if c is not None}


def online_checkpoints(
    admin: AdminClient,
    held_note: str | None,
    log_keys: list[str] | None,
    witnesses: Witnessed = NO_WITNESSES,
) -> OnlineCheckpoints:
    """The broker's latest checkpoint, checked against the log keys (those given, else the
    ones it serves, which is said) and cosigned by ``witnesses``, and, with ``held_note``
    (a checkpoint the user kept), that checkpoint and the latest's consistency with it
    (exit 1, ``FORK``, if none)."""
    from tasklease.client import NotFound
    from tasklease.verify import AuditProofError, verify_checkpoint, verify_log_consistency

    try:
        latest_note = admin.audit_checkpoint()
    except NotFound:
        if held_note is not None:
            raise
        err.print(
            "no checkpoint published yet: the chain is walked, not held to a signed tree",
            highlight=False,
        )
        return OnlineCheckpoints(None, "", None)
    keys = _trusted_keys(admin, log_keys)
    try:
        held = verify_checkpoint(held_note, keys) if held_note is not None else None
        origin = held.origin if held is not None else None
        latest = _checked(latest_note, keys, witnesses, origin=origin)
    except AuditProofError as exc:
        raise _proof_failed(exc) from None
    if held is not None:
        proof: list[str] = []
        if 0 < held.size < latest.size:
            proof = admin.audit_consistency_proof(held.size, latest.size)["proof"]
        try:
            verify_log_consistency(held, latest, proof)
        except AuditProofError as exc:
            err.print(
                f"[bold red]FORK:[/] the log's checkpoint of size {latest.size} does not "
                f"extend the one you hold (size {held.size}): {escape(exc.reason)}",
                highlight=False,
                markup=True,
            )
            raise typer.Exit(EXIT_FAILED) from None
    return OnlineCheckpoints(latest, latest_note, held)


class _Lookups:
    """The audit log's agent and task lookups (docs/audit.md, "Finding events") against
    its events: an edited lookup would hide events from a query by agent or task, or
    point it elsewhere, though the chain is intact.

    Each side is summed as a multiset of entry hashes under a key drawn for this run
    (Python's string hashing, whose key is random per process; a keyed BLAKE2b when that
    was fixed with PYTHONHASHSEED), so no one can build a forged set with the same sum.
    A store with no lookups (in memory) is not checked.
    """

    _MASK = (1 << 64) - 1

    def __init__(self, store: Store) -> None:
        self._read = getattr(store, "iter_audit_lookups", None)
        indexed = getattr(store, "audit_indexed", None)
        self.upto = int(indexed()) if callable(indexed) and self._read is not None else 0
        self._expected = 0
        self._hash: Callable[[tuple[str, str, int]], int] = hash
        if not sys.flags.hash_randomization:
            key = secrets.token_bytes(32)

            def keyed(entry: tuple[str, str, int]) -> int:
                data = "\0".join(map(str, entry)).encode("utf-8", "surrogatepass")
                digest = hashlib.blake2b(data, key=key, digest_size=8).digest()
                return int.from_bytes(digest, "little")

            self._hash = keyed

    def expect(self, event: AuditEvent) -> None:
        if event.seq <= self.upto:
            self._expected += self._hash(("agent", event.agent_id, event.seq))
            self._expected += self._hash(("task", event.task_id, event.seq))

    def check(self) -> None:
        if self._read is None:
            return
        digest = self._hash
        found = sum(digest(entry) for entry in self._read(self.upto))
        if found & self._MASK != self._expected & self._MASK:
            err.print(
                "[bold red]audit lookups broken:[/] the agent and task lookups do not match "
                f"the first {self.upto} events, so a query by agent or task would miss "
                "events. The events themselves are intact. To rebuild the lookups, delete "
                "the rows of audit_agent_seqs, audit_task_seqs and audit_indexed; the next "
                "append fills them again (docs/audit.md)",
                highlight=False,
                markup=True,
            )
            raise typer.Exit(EXIT_FAILED)


class _Times:
    """Each event's stored ``ts`` (the Unix seconds time filters read) against its hashed
    timestamp: an edited ``ts`` hides the event from every query by time, or moves it to
    another range, though the chain is intact (docs/audit.md, "Finding events").

    The expected value comes from ``auditformat.timestamp_seconds``, the function every
    store derives ``ts`` with when it writes an event.
    """

    def __init__(self) -> None:
        from tasklease.core.auditformat import timestamp_seconds

        self.seconds = timestamp_seconds
        self.first: tuple[AuditEvent, float] | None = None
        self.count = 0

    def expected(self, timestamp: str) -> float:
        try:
            return self.seconds(timestamp)
        except ValueError:  # not a timestamp: the chain walk names this event broken
            return math.nan  # equal to no ts

    def mismatch(self, event: AuditEvent, ts: float) -> None:
        self.count += 1
        if self.first is None:
            self.first = (event, ts)

    def check(self) -> None:
        if self.first is None:
            return
        event, ts = self.first
        more = f" (and {self.count - 1} more)" if self.count > 1 else ""
        err.print(
            f"[bold red]audit event times broken:[/] event {escape(event.id)}{more} is "
            f"stored with ts {ts!r}, which is not its timestamp "
            f"{escape(event.timestamp)}: the ts column was edited, so a query by time "
            "would miss the event or find it in another range. The events themselves are "
            "intact; ts is the timestamp in Unix seconds (docs/audit.md)",
            highlight=False,
            markup=True,
        )
        raise typer.Exit(EXIT_FAILED)


@dataclass(frozen=True, slots=True)
class StoredCheckpoint:
    """The latest signed checkpoint the database holds, as far as it could be checked:
    ``checkpoint`` when its signature verifies; ``found`` whether there is one at all;
    ``unchecked`` why its signature could not be checked (no log key to check it with)."""

    checkpoint: Checkpoint | None
    found: bool
    size: int = 0
    unchecked: str = ""


def _stored_checkpoint(
    store: Store, log_keys: list[str] | None, local_keys: Callable[[], list[str] | str]
) -> StoredCheckpoint:
    """The database's latest final checkpoint, its signature checked with ``log_keys``
    (``--log-key``), else with the broker's own log keys (``local_keys``: its key
    directory's, or why they cannot be read). A checkpoint the keys did not sign: exit 1."""
    from tasklease.core.auditcheck import latest_checkpoint
    from tasklease.rules.note import NoteError, VerifierKey

    record = store.get_checkpoint("final")
    if record is None:
        return StoredCheckpoint(None, found=False)
    keys = log_keys or local_keys()
    if isinstance(keys, str):
        return StoredCheckpoint(None, found=True, size=record.size, unchecked=keys)
    try:
        parsed = [VerifierKey.parse(k) for k in keys]
    except NoteError as exc:
        return StoredCheckpoint(None, found=True, size=record.size, unchecked=str(exc))
    checkpoint, problem = latest_checkpoint(store, parsed)
    _verdict(problem)
    return StoredCheckpoint(checkpoint, found=True, size=record.size)


def verify_database(
    store: Store,
    *,
    checkpoint_file: Path | None,
    log_keys: list[str] | None,
    local_keys: Callable[[], list[str] | str] = lambda: "no log key given (--log-key)",
    witnesses: Witnessed = NO_WITNESSES,
) -> None:
    """Offline: walk the chain, rebuild the Merkle tree, and compare it with the tree on
    record, with the latest signed checkpoint the database holds (its signature checked
    with ``log_keys``, else the broker's own log keys, ``local_keys``) and, with
    ``checkpoint_file``, with the checkpoint (a signed tree head kept outside the
    database). A checkpoint in the database shows no rewrite by a writer who cannot sign,
    but one who rewrites the events can delete it: that there is none is said. With
    ``witnesses``, the checkpoint kept must carry their quorum's cosignatures."""
    from tasklease.core.auditcheck import RebuiltTree
    from tasklease.core.auditformat import verify_chain
    from tasklease.verify import AuditProofError

    checkpoint: Checkpoint | None = None
    if checkpoint_file is not None:
        note = _read(checkpoint_file, "checkpoint")
        try:
            checkpoint = _checked(note, _trusted_keys(None, log_keys), witnesses)
        except AuditProofError as exc:
            raise _proof_failed(exc) from None
    stored = _stored_checkpoint(store, log_keys, local_keys)
    signed = stored.checkpoint
    tree = store.audit_tree()  # after the checkpoint, before the events: the walk covers both
    total, _ = store.audit_head()
    rebuilt = RebuiltTree(
        {
            tree.size if tree else 0,
            checkpoint.size if checkpoint else 0,
            signed.size if signed else 0,
        }
    )
    lookups = _Lookups(store)
    times = _Times()

    def leaves(events: Iterator[tuple[AuditEvent, float]]) -> Iterator[AuditEvent]:
        add = rebuilt.add
        stamp, seconds = "", math.nan  # events of one commit share a timestamp: parse it once
        for event, ts in events:
            lookups.expect(event)
            if event.timestamp != stamp:
                stamp, seconds = event.timestamp, times.expected(event.timestamp)
            if ts != seconds:
                times.mismatch(event, ts)
            add(event.hash)
            yield event

    with out.status("verifying audit chain") as status:
        report = verify_chain(
            leaves(store.iter_audit_ts()),
            progress=lambda n: status.update(f"verifying audit chain: {n}/{total} events"),
        )
    chain_verdict(report)
    if tree is not None:
        tree_verdict(tree.size, tree.root, rebuilt, report.checked, "the tree on record")
    if checkpoint is not None:
        # The checkpoint kept outside the database first: it says how the log differs
        # from what was signed (CUT, FORK), where the one beside the events only fails.
        checkpoint_verdict(
            checkpoint,
            rebuilt,
            report.checked,
            holds="the database holds",
            first="the database's first",
        )
    if signed is not None:
        tree_verdict(
            signed.size,
            signed.root,
            rebuilt,
            report.checked,
            "the latest signed checkpoint in the database",
        )
    lookups.check()
    times.check()
    tree_text = f"; Merkle tree of {tree.size} leaves matches" if tree else ""
    if signed is not None:
        tree_text += f"; the signed checkpoint of {signed.size} events in the database matches"
    out.print(
        f"audit chain intact: {report.checked} events, head {report.head_hash}{tree_text}",
        highlight=False,
    )
    _say_stored(stored, held=checkpoint is not None)
    if checkpoint is None:
        return
    out.print(
        f"CONSISTENT: the database holds the {checkpoint.size} events of the checkpoint of "
        f"{checkpoint.origin}, unchanged, and {report.checked - checkpoint.size} after them",
        highlight=False,
    )


def _say_stored(stored: StoredCheckpoint, *, held: bool) -> None:
    """What the database's own checkpoint proved, and what it could not."""
    outside = (
        "" if held else "; only a checkpoint kept outside the database (--checkpoint) shows that"
    )
    if not stored.found:
        err.print(
            "no signed checkpoint found in the database: the events make the tree on "
            "record, which whoever rewrites them can rebuild, so a rewritten log is not "
            f"ruled out{outside}",
            highlight=False,
        )
    elif stored.checkpoint is None:
        err.print(
            f"[yellow]warning:[/] the signed checkpoint in the database (size {stored.size}) "
            f"was not checked: {escape(stored.unchecked)}; give the log's key with "
            "--log-key",
            highlight=False,
            markup=True,
        )
    else:
        err.print(
            f"the events before the database's latest signed checkpoint (size "
            f"{stored.size}) are the ones the log key signed; a writer who also deletes "
            f"checkpoints is not ruled out{outside}",
            highlight=False,
        )


def chain_verdict(report: ChainReport) -> None:
    """Exit 1 naming the first broken link unless ``report`` found none."""
    from tasklease.core.auditcheck import chain_problem

    _verdict(chain_problem(report))


def register(audit_app: typer.Typer) -> None:
    audit_app.command("checkpoint")(audit_checkpoint)
    audit_app.command("log-keys")(audit_log_keys)
    audit_app.command("prove")(audit_prove)
    audit_app.command("rotate-log-key")(audit_rotate_log_key)
