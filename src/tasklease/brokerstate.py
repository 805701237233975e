"""A broker's state, which only ``tasklease init`` creates and every other command opens.

A broker *is* its state: the database (its schema, operators, revocations and the audit
log's hash chain) and the key set in ``key_dir`` (the signing keys, the audit log's key in
``log/``, ``nonce.secret``). A command that opens a broker and finds part of it missing
refuses and names what is missing; it never makes it. Made silently, a mistyped
``database`` started the audit chain again and made every revoked token valid again, and
an empty ``key_dir`` put a key into service that no audit event named
(docs/decisions.md 145).

Only the local files are looked at here (no database connection); what the database
holds is judged once it is open (:func:`require_store`).
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from urllib.parse import unquote, urlsplit

from tasklease.core.config import Config
from tasklease.core.keydirs import LOG_KEY_DIR
from tasklease.core.store import Store
from tasklease.storage.urls import redact_url

__all__ = [
    "INIT_HINT",
    "NONCE_SECRET",
    "StateError",
    "present",
    "refuse_unshared",
    "require",
    "require_store",
    "sqlite_path",
]

NONCE_SECRET = "nonce.secret"  # noqa: S105 (a file name, not a secret)
"""The file in ``key_dir`` that authenticates challenge nonces."""

INTERRUPTED_INIT_HINT = (
    "An interrupted `tasklease init` leaves signing keys without the rest: "
    "`tasklease init --force` with the same settings finishes it"
)
INIT_HINT = (
    "Only `tasklease init` creates a broker: run it for a new one; for an existing one, "
    "check data_dir, database and key_dir (a config file's relative paths are read from "
    "its own directory)"
)


class StateError(Exception):
    """The configuration names no broker (part of its state is missing), or names a
    store that cannot hold one; the message says what and what to do."""


def sqlite_path(database: str) -> Path | None:
    """The file of a SQLite ``database`` setting (a path or ``sqlite:///``), else None."""
    if "://" not in database:
        return Path(database) if database else None
    parts = urlsplit(database)
    return Path(unquote(parts.path)) if parts.scheme.lower() == "sqlite" else None


def refuse_unshared(database: str) -> None:
    """Refuse ``memory://``: a store of one process that keeps nothing.

    Raises:
        StateError: ``database`` is ``memory://``.
    """
    if "://" in database and urlsplit(database).scheme.lower() == "memory":
        raise StateError(
            'database = "memory://" keeps nothing across a restart and is not shared between '
            "worker processes (a token revoked on one stays valid on the others): it is for "
            "brokers built in-process by tests; give a SQLite path or a postgresql:// URL"
        )


def _has_keys(directory: Path) -> bool:
    try:
        return any(directory.glob("signing-*.pem"))
    except OSError:
        return False


def present(config: Config, config_file: Path | None = None) -> list[str]:
    """What of a broker's state exists where ``config`` points (files only), for
    ``init`` to refuse: it never makes a broker over another one."""
    found = []
    if config_file is not None and (config_file.exists() or config_file.is_symlink()):
        found.append(f"the config file {config_file}")
    database = sqlite_path(config.database)
    if database is not None and (database.exists() or database.is_symlink()):
        found.append(f"the database {database}")
    keys = Path(config.key_dir)
    if _has_keys(keys):
        found.append(f"signing keys in {keys}")
    if _has_keys(keys / LOG_KEY_DIR):
        found.append(f"the audit log key in {keys / LOG_KEY_DIR}")
    if (keys / NONCE_SECRET).exists():
        found.append(f"the nonce secret {keys / NONCE_SECRET}")
    return found


def require(config: Config) -> None:
    """Refuse, before anything is opened, a configuration whose state is not all there.

    Raises:
        StateError: ``database = "memory://"``, or the SQLite database, the key directory,
            its signing keys or its nonce secret are missing; the message names every
            missing part and ends with :data:`INIT_HINT`; or the SQLite database (its
            file, journal, shared memory or directory) can be changed by another user.
    """
    refuse_unshared(config.database)
    missing = []
    database = sqlite_path(config.database)
    if database is not None and not database.exists():
        missing.append(f"the database {database} does not exist")
    keys = Path(config.key_dir)
    if not keys.is_dir():
        missing.append(f"the key directory {keys} does not exist")
    else:
        if not _has_keys(keys):
            missing.append(f"the key directory {keys} holds no signing key")
        if not (keys / NONCE_SECRET).exists():
            missing.append(f"the nonce secret {keys / NONCE_SECRET} does not exist")
    if missing:
        hint = INIT_HINT
        if keys.is_dir() and _has_keys(keys) and not (keys / NONCE_SECRET).exists():
            # Signing keys without the nonce secret made after them: what an ``init``
            # stopped part way leaves (a typo in a path leaves the nonce secret).
            hint = INTERRUPTED_INIT_HINT
        raise StateError(f"no broker here: {'; '.join(missing)}. {hint}")
    if database is not None:
        _refuse_changeable_by_others(database)


def _refuse_changeable_by_others(database: Path) -> None:
    """Refuse a SQLite database that another user can change: its file, journal or shared
    memory owned by someone else or writable by group or others, or its directory owned by
    someone else (root aside) or writable by them (a file of theirs put in its place, or a
    journal beside it). The database holds the revocations, the operators and their
    secrets' hashes, and the audit log; the key directory is held to this too
    (``keystore``).

    Raises:
        StateError: naming the path, its owner or mode, and the fix.
    """
    directory = database.parent
    paths = [directory, database, *(Path(f"{database}{end}") for end in ("-wal", "-shm"))]
    for path in paths:
        try:
            st = path.stat()
        except FileNotFoundError:
            continue  # a journal not made yet
        except OSError as exc:
            raise StateError(f"cannot read {path}: {exc.strerror or exc}") from None
        if path is not directory and st.st_uid != os.geteuid():
            raise StateError(
                f"the database file {path} is owned by uid {st.st_uid}, not by this user "
                f"(uid {os.geteuid()}): its owner could rewrite revocations, operators and "
                f"the audit log; chown it, or serve as its owner"
            )
        if path is directory and st.st_uid not in (os.geteuid(), 0):
            raise StateError(
                f"the database's directory {path} is owned by uid {st.st_uid}, not by this "
                f"user (uid {os.geteuid()}) or root: its owner could put another database in "
                f"its place; chown it, or serve as its owner"
            )
        if st.st_mode & 0o022:
            what = "the database's directory" if path is directory else "the database file"
            raise StateError(
                f"{what} {path} is writable by group or others (mode "
                f"{stat.S_IMODE(st.st_mode):04o}): they could rewrite revocations, operators "
                f"and the audit log; run: chmod go-w {path}"
            )


def require_store(config: Config, store: Store) -> bool:
    """Refuse an open database that no ``tasklease init`` wrote into; return whether the
    audit log's key may be made (see below).

    ``init`` audits the first operator, so a broker's audit log is never empty: an empty
    one is another database (a PostgreSQL database migrated by mistake, say), and
    serving it would start the chain again and forget every revocation.

    The audit log's key is part of the state too, with one exception: a data directory
    from before signed checkpoints has signing keys but no log key, and its database no
    checkpoint; only then may the broker make the log key (and returns True). A database
    with checkpoints and no log key beside the signing keys is refused: its
    checkpoints' key is elsewhere.

    Raises:
        StateError: as said, naming the database and the key directory.
    """
    shown = redact_url(config.database)
    seq, _ = store.audit_head()
    if seq == 0:
        raise StateError(
            f"no broker here: the database {shown} holds no audit event (`tasklease init` "
            f"never ran on it). {INIT_HINT}"
        )
    logs = Path(config.key_dir) / LOG_KEY_DIR
    if _has_keys(logs):
        return False
    if store.get_checkpoint("signed") is not None:
        raise StateError(
            f"no broker here: the key directory {config.key_dir} holds no audit log key "
            f"({logs}) but the database {shown} holds checkpoints signed by one: restore "
            f"the key directory whole. {INIT_HINT}"
        )
    return True
