"""The audit log's anchors: the last checkpoint each log key signed, kept beside the key.

One file per log (``core.rollback``): ``checkpoint-<the first 32 hex digits of the log's
name>`` in the log key's directory (``<key_dir>/log``, a tenant's
``<key_dir>/tenants/<name>/log``), holding the signed checkpoint note as the broker signed
it (the format of ``tasklease audit checkpoint``: ``tasklease audit verify --checkpoint``
reads it). Written as the key files are (``keystore._directory``): under the directory's
lock, aside, fsynced, renamed into place, 0600 in a 0700 directory; read only when it is a
regular file of this user that nobody else may read or write.

A log key anchors one log (``core.rollback``): the anchors of other logs in its directory
are listed (:meth:`CheckpointFiles.others`) so that a database naming itself otherwise is
caught, and accepting a restore sets them aside as ``retired-checkpoint-<id>`` (kept, for
whoever wants to see what the key signed before, and read by nothing).
"""

from __future__ import annotations

import re
from pathlib import Path

from tasklease.core.rollback import read_anchor
from tasklease.keystore._directory import (
    KeyStoreError,
    ensure_directory,
    locked,
    read_private_file,
    rewrite_key_file,
    set_aside,
)

__all__ = ["ANCHOR_PREFIX", "RETIRED_PREFIX", "CheckpointFiles"]

ANCHOR_PREFIX = "checkpoint-"
RETIRED_PREFIX = "retired-"
_ANCHOR_NAME = re.compile(rf"{ANCHOR_PREFIX}[0-9a-f]{{32}}")
# A checkpoint note: three short lines and a signature line or a few (cosignatures).
_MAX_ANCHOR_BYTES = 16384


class CheckpointFiles:
    """:class:`tasklease.core.rollback.CheckpointAnchors` in the log key's directory."""

    def path(self, directory: Path, log_id: bytes) -> Path:
        return directory / f"{ANCHOR_PREFIX}{log_id.hex()[:32]}"

    def where(self, directory: Path, log_id: bytes) -> str:
        return str(self.path(directory, log_id))

    def read(self, directory: Path, log_id: bytes) -> str | None:
        """The anchor's note, None when there is none.

        Raises:
            KeyStoreError: a link, not a regular file of this user, readable or writable by
                others, too large or not UTF-8.
            OSError: it could not be read.
        """
        return self._read(self.path(directory, log_id))

    def others(self, directory: Path, log_id: bytes) -> list[tuple[str, str]]:
        """The anchors of other logs than ``log_id`` kept in ``directory`` (files named
        ``checkpoint-<32 hex digits>``), each with where it is; none when the directory
        does not exist.

        Raises:
            KeyStoreError, OSError: as :meth:`read`, for any of them.
        """
        found = []
        for path in self._other_paths(directory, log_id):
            note = self._read(path)
            if note is not None:  # not gone meanwhile
                found.append((str(path), note))
        return found

    def _other_paths(self, directory: Path, log_id: bytes) -> list[Path]:
        mine = self.path(directory, log_id).name
        try:
            names = sorted(entry.name for entry in directory.iterdir())
        except FileNotFoundError:
            return []
        return [directory / n for n in names if _ANCHOR_NAME.fullmatch(n) and n != mine]

    def _read(self, path: Path) -> str | None:
        try:
            data = read_private_file(
                path, f"checkpoint anchor {path}", _MAX_ANCHOR_BYTES, fix=f": chmod 600 {path}"
            )
        except FileNotFoundError:
            return None
        if len(data) > _MAX_ANCHOR_BYTES:
            raise KeyStoreError(f"checkpoint anchor {path} is too large to be a checkpoint")
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError:
            raise KeyStoreError(f"checkpoint anchor {path} is not UTF-8 text") from None

    def advance(self, directory: Path, log_id: bytes, note: str) -> None:
        """Keep ``note`` unless the anchor kept is of a larger tree (read under the lock).

        An anchor kept that is not a checkpoint is replaced.

        Raises:
            KeyStoreError: the directory or the anchor is unsafe.
            ValueError: ``note`` is not a signed checkpoint.
            OSError: it could not be read or written.
        """
        size = read_anchor(note).size
        ensure_directory(directory)
        with locked(directory):
            kept = self.read(directory, log_id)
            if kept is not None:
                try:
                    if read_anchor(kept).size >= size:
                        return
                except ValueError:
                    pass  # unreadable as a checkpoint: the new one replaces it
            rewrite_key_file(self.path(directory, log_id), note.encode("utf-8"))

    def replace(self, directory: Path, log_id: bytes, note: str) -> None:
        """Keep ``note`` whatever was kept, and set the other logs' anchors aside
        (``retired-checkpoint-<id>``, replacing one set aside before under that name).

        Raises:
            KeyStoreError, ValueError, OSError: as :meth:`advance`.
        """
        read_anchor(note)
        ensure_directory(directory)
        with locked(directory):
            rewrite_key_file(self.path(directory, log_id), note.encode("utf-8"))
            for path in self._other_paths(directory, log_id):
                set_aside(path, f"{RETIRED_PREFIX}{path.name}")
