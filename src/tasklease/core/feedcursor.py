"""The revocation feed's cursor: a ``seq``, and the fingerprint of the entry at it.

A bare ``seq`` cannot tell a reader's history from the store's after the database went
back in time (a failover to a standby that missed the last commits, a restore): the
numbers past the store's last are handed out again, and a reader that asks for what
follows its ``seq`` skips the entries numbered again below it, for good. The anchored
cursor ``<seq>.<fingerprint>`` names the entry the reader read last; the feed continues
from it only while the store holds that same entry at that same ``seq`` (decision 139).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from tasklease.core.errors import InvalidRequest
from tasklease.core.records import RevocationRecord

__all__ = ["MAX_SEQ", "FeedPage", "fingerprint", "format_cursor", "parse_cursor"]

MAX_SEQ = 2**63 - 1
_FINGERPRINT_CHARS = 16
_HEX = frozenset("0123456789abcdef")


def fingerprint(record: RevocationRecord) -> str:
    """A short digest of what the entry at a ``seq`` is (its level, target and
    ``revoked_at``): an entry numbered again after the database went back in time is,
    but for a coincidence of all three, another one. Not a secret: readers see entries."""
    text = f"{record.level}\x00{record.target}\x00{record.revoked_at}".encode()
    return hashlib.sha256(text).hexdigest()[:_FINGERPRINT_CHARS]


def format_cursor(seq: int, anchor: str) -> str:
    """The cursor a reader sends back: ``<seq>.<anchor>``, or the bare ``seq`` when no
    entry is known at it (0, or a bare cursor whose entry the store no longer holds)."""
    return f"{seq}.{anchor}" if anchor else str(seq)


def parse_cursor(value: str | None) -> tuple[int | None, str | None]:
    """``(seq, anchor)`` of a cursor as a reader sent it: ``(None, None)`` for none, an
    anchor of ``None`` for a bare ``seq`` (a reader from before anchored cursors).

    Raises ``InvalidRequest`` for anything else."""
    if value is None or value == "":
        return None, None
    seq_text, dot, anchor = value.partition(".")
    if (
        not seq_text.isascii()
        or not seq_text.isdigit()
        or len(seq_text) > 19
        or int(seq_text) > MAX_SEQ
        or (dot and (len(anchor) != _FINGERPRINT_CHARS or not _HEX.issuperset(anchor)))
    ):
        raise InvalidRequest("cursor must be a cursor the feed gave, or a non-negative integer")
    return int(seq_text), (anchor if dot else None)


@dataclass(frozen=True, slots=True)
class FeedPage:
    """One answer of the revocation feed.

    ``records`` in ``seq`` order; ``cursor`` the ``seq`` to continue from and ``anchor``
    the fingerprint of the entry at it ("" when none is known); ``restarted`` when the
    reader's cursor no longer named the store's history and ``records`` is a snapshot of
    every unexpired entry instead of what follows it.
    """

    records: list[RevocationRecord]
    cursor: int
    anchor: str
    restarted: bool = False

    @property
    def next_cursor(self) -> str:
        """The cursor to send back (:func:`format_cursor`)."""
        return format_cursor(self.cursor, self.anchor)
