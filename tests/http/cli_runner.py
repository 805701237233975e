"""typer's ``CliRunner``, on the command Typer builds from an app once.

``typer.testing.CliRunner.invoke`` builds the click command from the Typer app on every
run (``typer.main.get_command``: every command's signature read again, its annotations
evaluated), which costs more than most commands' own work. The command built is the
same each time: this runner builds it once per app and runs it, in typer's own isolation
(its streams, environment and exit-code handling), as the base runner does.

A test that monkeypatches what a command calls still sees its patch: a command looks its
helpers up when it runs. A test that changed the Typer app itself (a command added or
replaced after the first run) would need the base runner.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache
from typing import Any

import typer
import typer.main
import typer.testing
from typer.testing import Result


@cache
def built(app: typer.Typer) -> Any:
    """The click command Typer makes of ``app`` (built once)."""
    return typer.main.get_command(app)


class CliRunner(typer.testing.CliRunner):
    def invoke(  # type: ignore[override]
        self, app: typer.Typer, args: str | Sequence[str] | None = None, **kwargs: Any
    ) -> Result:
        # typer.testing looks its builder up at each run: the cached one, for this run.
        building = typer.testing._get_command
        typer.testing._get_command = built
        try:
            return super().invoke(app, args, **kwargs)
        finally:
            typer.testing._get_command = building
