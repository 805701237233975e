"""The ``tasklease`` command; :func:`main` is its entry point.

``pip install tasklease`` (the SDK and the verifier) installs the script as well, but not
what the command runs on: the ``cli`` extra (typer, rich, PyYAML) and the ``server`` extra
it brings. This module imports none of them, so that where they are missing the command
names the module and the extra to install (exit 2, a configuration error) instead of
ending in a traceback. A missing module of tasklease itself is a bug: it is raised.
"""

from __future__ import annotations

import sys

__all__ = ["main"]


def main() -> None:
    """Run the ``tasklease`` command (:mod:`tasklease.cli.main`)."""
    from tasklease.hardening import core_dumps_allowed, protect

    # No core file holds the secrets and keys a command reads, and the user's other
    # processes cannot read its memory (docs/operations.md, Process hardening).
    protect(allow_core_dumps=core_dumps_allowed())
    try:
        from tasklease.cli.main import main as run

        run()
    except ModuleNotFoundError as missing:
        top = (missing.name or "").partition(".")[0]
        if not top or top == "tasklease":
            raise
        sys.stderr.write(
            f"error: the tasklease command needs {top}, which is not installed here "
            "(`pip install tasklease` is the SDK and the verifier only)\n"
            "hint: install the broker and its command: pip install 'tasklease[cli]'\n"
        )
        raise SystemExit(2) from None
