"""Generate deploy/requirements.lock: the broker's dependencies pinned, with their hashes.

The lock holds every package that ``tasklease[cli,postgres]`` (the broker and its
command, on SQLite or PostgreSQL) needs at run time, each pinned ``==`` with the SHA-256
of every file the package index has for that version (wheels for every platform and the
sdist), so the one lock installs wherever those files do. The resolution is universal
(uv's ``--universal``): a dependency that only some platforms need carries its
environment marker (``colorama`` on Windows, ``uvloop`` where it runs) instead of being
left out by the machine that locked. ``tasklease`` itself is not in it: it is installed
from its wheel, after the lock, without dependencies (docs/operations.md, "Installing
for production").

Re-locking keeps every version already pinned that still fits pyproject.toml, adding what
a new dependency needs; ``--upgrade`` moves every package to its newest version that fits.
It needs the package index and uv (``make lock`` installs uv into .venv first):

    python scripts/lock.py             # write deploy/requirements.lock
    python scripts/lock.py --upgrade   # the same, every package at its newest version

tests/packaging/test_lock.py checks the lock offline against pyproject.toml and the
installed dependencies' metadata.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LOCK = Path("deploy") / "requirements.lock"
EXTRAS = ("cli", "postgres")
# The oldest Python pyproject.toml's requires-python admits: the universal resolution
# holds from it up.
PYTHON = "3.11"
# Only the default index, whatever this machine's environment names: a lock resolved
# against a mirror or a local folder would not be the one every deployment can check.
_UV_ENV_DROPPED = (
    "UV_INDEX", "UV_INDEX_URL", "UV_DEFAULT_INDEX", "UV_EXTRA_INDEX_URL", "UV_FIND_LINKS",
    "UV_NO_INDEX", "UV_CONSTRAINT", "UV_OVERRIDE", "UV_BUILD_CONSTRAINT", "UV_EXCLUDE_NEWER",
    "UV_PRERELEASE", "UV_RESOLUTION", "UV_CONFIG_FILE",
)  # fmt: skip


def _uv() -> str:
    try:
        from uv import find_uv_bin
    except ImportError:
        sys.exit("scripts/lock.py needs uv in this environment: run `make lock`.")
    return str(find_uv_bin())


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--upgrade", action="store_true", help="every package at its newest version that fits"
    )
    args = parser.parse_args(argv)
    command = [
        _uv(), "pip", "compile", "pyproject.toml",
        *(f"--extra={extra}" for extra in EXTRAS),
        "--universal", f"--python-version={PYTHON}",
        "--generate-hashes", "--no-config", "--quiet",
        "--custom-compile-command=make lock",
        f"--output-file={LOCK}",
    ]  # fmt: skip
    if args.upgrade:
        command.append("--upgrade")
    env = {k: v for k, v in os.environ.items() if k not in _UV_ENV_DROPPED}
    result = subprocess.run(command, cwd=ROOT, env=env, check=False)  # noqa: S603
    if result.returncode == 0:
        print(f"wrote {LOCK}")
    return result.returncode


if __name__ == "__main__":
    sys.exit(main())
