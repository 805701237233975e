"""`tasklease login` reads the broker's answer within bounds: a sign-in answered with a
lifetime no float holds, none, or a bool is an error line and exit 4 (the broker
failed), never a traceback nor a session file that expires when no clock reaches."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from answers_support import Answer, FakeServer, serving
from cli_runner import CliRunner

from tasklease.cli.main import app


@pytest.fixture(scope="module")
def server() -> Iterator[FakeServer]:
    with serving() as fake:
        yield fake


# Would fail if: login added the answer's expires_in to the clock unread (OverflowError
# for 10**400, a session "for True s" for a bool, a session already expired for none).
@pytest.mark.parametrize("expires_in", ["1" + "0" * 400, "true", "0", "-5", '"300"', "null"])
def test_a_sign_in_answer_without_a_sane_lifetime_is_refused(
    server: FakeServer, tmp_path: Path, expires_in: str
) -> None:
    body = f'{{"access_token": "t", "token_type": "Bearer", "expires_in": {expires_in}}}'
    server.answer(Answer(body=body.encode()))
    env: dict[str, str | None] = {k: None for k in os.environ if k.startswith("TASKLEASE_")}
    env.update(
        HOME=str(tmp_path),
        XDG_CONFIG_HOME=str(tmp_path / ".config"),
        TASKLEASE_URL=server.url,
        TASKLEASE_ADMIN_SECRET="s" * 32,
    )
    done = CliRunner().invoke(app, ["login"], env=env)
    assert done.exit_code == 4, done.output
    assert "without a token and its lifetime" in done.output
    assert not list((tmp_path / ".config").rglob("*.json"))
