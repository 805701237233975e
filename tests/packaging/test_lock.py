"""deploy/requirements.lock: the broker's dependencies, pinned and hashed, as pyproject.toml
asks for them today (offline: the lock, pyproject.toml and the installed metadata).

Every entry is ``name==version`` (an environment marker may follow) with at least one
``--hash=sha256:``, and nothing else a requirements file could say (no index, no URL, no
editable, no other option). The entries cover the run-time dependency closure of
``tasklease[cli,postgres]``: pyproject.toml's own requirements (so adding a dependency there without
re-locking fails here), then each dependency's requirements as its installed metadata
states them, extras followed, markers evaluated for this Python. Every pinned version
satisfies what pyproject.toml asks of it. And nothing in it is unused: an entry whose
marker holds here is in the closure; one whose marker does not (``colorama`` on Windows)
is a requirement, for another environment, of a package in the closure.
"""

from __future__ import annotations

import re
import tomllib
from importlib import metadata
from pathlib import Path

import pytest
from packaging.markers import Marker, default_environment
from packaging.requirements import Requirement
from packaging.utils import NormalizedName, canonicalize_name
from packaging.version import Version

REPO = Path(__file__).resolve().parents[2]
LOCK = REPO / "deploy" / "requirements.lock"
EXTRAS = ("cli", "postgres")
PROJECT = canonicalize_name("tasklease")
_HASH = re.compile(r"--hash=sha256:[0-9a-f]{64}")
_PIN = re.compile(
    r"(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)==(?P<version>[^\s;]+)(?:\s*;\s*(?P<marker>.+))?"
)


class LockEntry:
    def __init__(self, name: NormalizedName, version: Version, marker: Marker | None) -> None:
        self.name = name
        self.version = version
        self.marker = marker

    def applies_here(self) -> bool:
        return self.marker is None or self.marker.evaluate()


def parse_lock(text: str) -> dict[NormalizedName, LockEntry]:
    """The lock's entries by name; ValueError for anything that is not a hashed pin."""
    logical: list[str] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.split(" #", 1)[0].strip() if not raw.lstrip().startswith("#") else ""
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        pending += line
        if pending.strip():
            logical.append(pending.strip())
        pending = ""
    if pending.strip():
        raise ValueError(f"the lock ends inside a continued line: {pending!r}")
    entries: dict[NormalizedName, LockEntry] = {}
    for line in logical:
        requirement, _, options = line.partition(" --")
        options = "--" + options if options else ""
        pin = _PIN.fullmatch(requirement.strip())
        if pin is None:
            raise ValueError(f"not a pinned requirement: {line!r}")
        hashes = options.split()
        if not hashes or not all(_HASH.fullmatch(h) for h in hashes):
            raise ValueError(
                f"an entry without its sha256 hashes, or with another option: {line!r}"
            )
        name = canonicalize_name(pin["name"])
        if name in entries:
            raise ValueError(f"{name} is pinned twice")
        marker = Marker(pin["marker"]) if pin["marker"] else None
        entries[name] = LockEntry(name, Version(pin["version"]), marker)
    return entries


def project_requirements(extras: tuple[str, ...]) -> list[Requirement]:
    """What pyproject.toml asks for ``tasklease[extras]``, its own extras followed."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    optional: dict[str, list[str]] = project.get("optional-dependencies", {})
    wanted = list(extras)
    seen: set[str] = set()
    found = [Requirement(r) for r in project["dependencies"]]
    while wanted:
        extra = wanted.pop()
        if extra in seen:
            continue
        seen.add(extra)
        for text in optional[extra]:
            requirement = Requirement(text)
            if canonicalize_name(requirement.name) == PROJECT:
                wanted.extend(requirement.extras)
            else:
                found.append(requirement)
    return found


_EXTRA = re.compile(r"""\bextra\s*==\s*["']([^"']+)["']""")


def _contexts(requirement: Requirement, extras: tuple[str, ...]) -> list[str] | None:
    """The extras of its package under which a requirement is asked for ("" for none), or
    None when it belongs to extras nobody asked for."""
    if requirement.marker is None:
        return [""]
    named = {canonicalize_name(e) for e in _EXTRA.findall(str(requirement.marker))}
    if not named:
        return [""]
    asked = [e for e in extras if canonicalize_name(e) in named]
    return asked or None


class Closure:
    """The installed packages ``tasklease[extras]`` needs in this environment (``here``),
    and the requirements it names for other environments only (``elsewhere``: name ->
    what asks for it), from pyproject.toml's requirements through installed metadata.

    A package installed at another version than ``pinned`` names (a dependency released
    since the lock was made, which a fresh install takes) is listed in ``drifted``: what
    it needs now says nothing sure of the locked version, so what is reached only through
    it is ``loose`` (possibly needed), not ``here``."""

    def __init__(
        self, top: list[Requirement], pinned: dict[NormalizedName, Version] | None = None
    ) -> None:
        self.here: set[NormalizedName] = set()
        self.loose: set[NormalizedName] = set()
        self.elsewhere: dict[NormalizedName, list[str]] = {}
        self.missing: list[str] = []
        self.drifted: list[str] = []
        todo: list[tuple[Requirement, list[str], str, bool]] = [
            (r, [""], "pyproject.toml", True) for r in top
        ]
        followed: set[tuple[NormalizedName, str, bool]] = set()
        while todo:
            requirement, contexts, by, sure = todo.pop()
            name = canonicalize_name(requirement.name)
            marker = requirement.marker
            if marker is not None and not any(marker.evaluate({"extra": e}) for e in contexts):
                self.elsewhere.setdefault(name, []).append(f"{by}: {requirement}")
                continue
            (self.here if sure else self.loose).add(name)
            extras = tuple(sorted(requirement.extras))
            if all((name, e, sure) in followed for e in ("", *extras)):
                continue
            followed.update((name, e, sure) for e in ("", *extras))
            try:
                installed = metadata.distribution(name)
            except metadata.PackageNotFoundError:
                if sure:
                    self.missing.append(f"{name} (asked by {by})")
                continue
            locked = (pinned or {}).get(name)
            if sure and locked is not None and Version(installed.version) != locked:
                self.drifted.append(f"{name} {installed.version} (locked {locked})")
                sure = False
            label = f"{name}[{','.join(extras)}]" if extras else name
            for text in installed.requires or []:
                child = Requirement(text)
                child_contexts = _contexts(child, extras)
                if child_contexts is not None:
                    todo.append((child, child_contexts, label, sure))


@pytest.fixture(scope="module")
def lock() -> dict[NormalizedName, LockEntry]:
    return parse_lock(LOCK.read_text())


@pytest.fixture(scope="module")
def closure(lock: dict[NormalizedName, LockEntry]) -> Closure:
    pinned = {name: entry.version for name, entry in lock.items()}
    return Closure(project_requirements(EXTRAS), pinned)


def test_the_lock_parses_and_every_entry_is_pinned_with_its_hashes(
    lock: dict[NormalizedName, LockEntry],
) -> None:
    assert lock, "the lock is empty"
    assert PROJECT not in lock, "tasklease itself is installed from its wheel, not the lock"


def test_the_parser_refuses_what_a_lock_must_not_hold() -> None:
    digest = "0" * 64
    assert parse_lock(f"a==1 \\\n    --hash=sha256:{digest}\n    # via b\n")
    for bad in (
        "a==1\n",  # no hash
        "a>=1 --hash=sha256:" + digest + "\n",  # not pinned
        "a==1 --hash=md5:" + "0" * 32 + "\n",
        "a==1 --hash=sha256:" + digest + " --index-url=https://example.invalid/\n",
        "-e ./src\n",
        "a @ https://example.invalid/a.whl --hash=sha256:" + digest + "\n",
        f"a==1 --hash=sha256:{digest}\nA==2 --hash=sha256:{digest}\n",
        "a==1 \\\n",
    ):
        with pytest.raises(ValueError):
            parse_lock(bad)


def test_the_lock_covers_the_broker_s_dependency_closure(
    lock: dict[NormalizedName, LockEntry], closure: Closure
) -> None:
    assert not closure.missing, f"not installed, so not followed: {closure.missing}"
    here = {name for name, entry in lock.items() if entry.applies_here()}
    missing = sorted(closure.here - here)
    assert not missing, f"needed by the broker but not locked (run `make lock`): {missing}"


def test_nothing_in_the_lock_is_unused(
    lock: dict[NormalizedName, LockEntry], closure: Closure
) -> None:
    unused = sorted(
        name
        for name, entry in lock.items()
        if (
            name not in closure.here | closure.loose
            if entry.applies_here()
            else name not in closure.elsewhere
        )
    )
    if unused and closure.drifted:
        # What a drifted package needs at its locked version is not installed to be read.
        pytest.skip(f"{unused} may be needed by {closure.drifted} at their locked versions")
    assert not unused, f"locked but needed by nothing of the broker (run `make lock`): {unused}"


def test_every_pin_satisfies_pyproject(lock: dict[NormalizedName, LockEntry]) -> None:
    wrong = [
        f"{requirement} but the lock pins {lock[name].version}"
        for requirement in project_requirements(EXTRAS)
        if (name := canonicalize_name(requirement.name)) in lock
        and not requirement.specifier.contains(lock[name].version, prereleases=True)
    ]
    assert not wrong, f"re-lock (`make lock`): {wrong}"


def test_a_new_dependency_in_pyproject_needs_a_re_lock(
    lock: dict[NormalizedName, LockEntry], closure: Closure
) -> None:
    """What the checks above see of a pyproject.toml that gained a dependency: it is not in
    the closure's locked names (and, not installed, not followed either)."""
    grown = Closure([*project_requirements(EXTRAS), Requirement("left-pad-for-python>=1")])
    assert canonicalize_name("left-pad-for-python") in grown.here - set(lock)
    assert grown.missing
    # A dependency for another platform only is locked too, with its marker.
    other = "win32" if default_environment()["sys_platform"] != "win32" else "linux"
    elsewhere = Closure([Requirement(f"left-pad-for-python>=1; sys_platform == '{other}'")])
    assert canonicalize_name("left-pad-for-python") in elsewhere.elsewhere
