"""Issuance policies from files: a tenant's ``.cedar`` files in ``<policy_dir>/<tenant>/``.

The adapter ``core.policy`` reads policies through (:class:`PolicyDirectory`, a
``PolicySource``). A snapshot is every ``*.cedar`` file of the tenant's directory, by
name, with a signature of their names, sizes and modification times, so the broker
reloads only what changed (every few seconds, and on ``POST /v1/admin/policy/reload``).
No directory, or one without a ``.cedar`` file: the tenant has no policies of its own (the
default applies). A directory that cannot be read, a ``.cedar`` entry that cannot be read
(a link whose target is gone, a directory of that name, a pipe or a device: anything but
a regular file), a file that is not UTF-8, or a root that is not a directory (gone, a
link to nothing), fails the load (the set in force stays): a policy that disappears that
way must not take its ``forbid`` rules with it silently. So does a directory or file
another user could change (owned by another user than this one or root, or writable by
group or others, off a read-only mount): whoever writes the policies decides issuances.
"""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

from tasklease.core.policy import MAX_POLICY_BYTES, PolicyError, PolicySnapshot
from tasklease.localfiles import foreign_owner, open_regular

__all__ = ["PolicyDirectory", "read_policy_file", "read_policy_files"]

MAX_FILES = 256


def read_policy_files(directory: Path) -> tuple[tuple[str, str], ...]:
    """The ``*.cedar`` files of ``directory`` as ``(name, text)``, by name.

    Raises:
        PolicyError: the directory or a file cannot be read, is not UTF-8, or there are
            too many or too large files.
    """
    try:
        # Every entry named ``*.cedar``, whatever it is: one that cannot be read as a file
        # fails below, rather than being left out of the set.
        paths = sorted(p for p in directory.iterdir() if p.suffix == ".cedar")
    except OSError as exc:
        raise PolicyError(f"cannot read {directory}: {exc.strerror or exc}") from None
    if len(paths) > MAX_FILES:
        raise PolicyError(f"{directory} holds more than {MAX_FILES} policy files")
    files = []
    total = 0
    for path in paths:
        text = read_policy_file(path, MAX_POLICY_BYTES - total)
        total += len(text.encode("utf-8"))
        files.append((path.name, text))
    return tuple(files)


def read_policy_file(path: Path, limit: int = MAX_POLICY_BYTES) -> str:
    """The text of one policy file, read as the broker reads it (and ``tasklease policy
    check``): a regular file (its link followed: a pipe would wait for a writer forever,
    a device read without end), at most ``limit`` bytes, UTF-8, holding a policy.

    Raises:
        PolicyError: it cannot be read, is not a regular file, is larger than ``limit``,
            is not UTF-8 or holds no policy.
    """
    try:
        with open(open_regular(path), "rb") as file:
            raw = file.read(max(limit, 0) + 1)
    except OSError as exc:
        raise PolicyError(f"cannot read {path}: {exc.strerror or exc}") from None
    if len(raw) > limit:
        raise PolicyError(f"the policies of {path.parent} exceed {MAX_POLICY_BYTES} bytes")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise PolicyError(f"{path} is not UTF-8") from None
    if not _holds_a_statement(text):
        # As a file being written in place reads for an instant (an editor, `cat >`):
        # loaded, it would drop the file's forbid rules until the next reload.
        raise PolicyError(
            f"{path} holds no policy (a file being written?): remove it to drop its policies"
        )
    return text


def _holds_a_statement(text: str) -> bool:
    """Whether ``text`` holds anything but blank lines and ``//`` comments."""
    return any(line.strip() and not line.lstrip().startswith("//") for line in text.splitlines())


class PolicyDirectory:
    """A tenant's policy directory, ``<root>/<tenant>``."""

    def __init__(self, root: str | Path, tenant: str) -> None:
        self.root = Path(root)
        self.path = self.root / tenant

    def snapshot(self) -> PolicySnapshot | None:
        """The directory's policy files now, or None when it has none (or does not exist).

        ``root`` (``policy_dir``) must be a directory: when it is gone (a link to a
        release whose target was removed, a volume not mounted) the tenant's directory is
        not "absent" but unreadable, and the load fails, as for a tenant directory that
        is a link to nothing.

        The signature is a digest of every file's name and text: a file rewritten within
        the clock's resolution at the same size is still seen.

        Raises:
            PolicyError: ``root`` is not a directory, or the tenant's directory, or a file
                of it, cannot be read.
        """
        try:
            is_dir = stat.S_ISDIR(os.stat(self.root).st_mode)
        except OSError as exc:
            raise PolicyError(f"cannot read {self.root}: {exc.strerror or exc}") from None
        if not is_dir:
            raise PolicyError(f"cannot read {self.root}: not a directory")
        try:
            os.stat(self.path)
        except FileNotFoundError:
            if os.path.lexists(self.path):  # a link whose target is gone: not "no policies"
                raise PolicyError(f"cannot read {self.path}: its link's target is gone") from None
            return None
        except OSError as exc:
            raise PolicyError(f"cannot read {self.path}: {exc.strerror or exc}") from None
        files = read_policy_files(self.path)
        if not files:
            return None
        # What each name leads to, and the directory holding each file (one linked from
        # elsewhere, as a Kubernetes ConfigMap mounts them): no one else may change them.
        held = [(self.path / name).resolve() for name, _ in files]
        for place in {self.root.resolve(), self.path.resolve(), *held, *(f.parent for f in held)}:
            _check_trust(place)
        digest = hashlib.sha256(repr(files).encode()).hexdigest()
        return PolicySnapshot(files, str(self.path), digest)


def _check_trust(place: Path) -> None:
    """Refuse a policy directory or file that a user other than this one or root could
    change, as a config file is refused (``settings``): whoever writes a tenant's policies
    decides its issuances (forbids them all, or permits what the default refuses, within
    the kernel's ceilings). On a read-only mount no one writes, whatever the mode says.

    Raises:
        PolicyError: owned by another user, or writable by group or others.
    """
    euid = os.geteuid()
    try:
        st = os.stat(place)
        if os.statvfs(place).f_flag & os.ST_RDONLY:
            return
    except OSError as exc:
        raise PolicyError(f"cannot read {place}: {exc.strerror or exc}") from None
    if foreign_owner(st):
        raise PolicyError(
            f"{place} is owned by uid {st.st_uid}, not by this user (uid {euid}) or root: "
            "its owner would decide the tenant's issuances; chown it"
        )
    if st.st_mode & 0o022:
        raise PolicyError(
            f"{place} is writable by group or others (mode {stat.S_IMODE(st.st_mode):04o}): "
            f"whoever writes it would decide the tenant's issuances; run: chmod go-w {place}"
        )
