"""`tasklease login` reads the broker's answer within bounds: a sign-in answered with a
lifetime no float holds, none, or a bool is an error line and exit 4 (the broker
failed), never a traceback nor a session file that expires when no clock reaches."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from answers_support import Answer, FakeServer, cli_env, serving
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
    env = cli_env(server.url, str(tmp_path))
    done = CliRunner().invoke(app, ["login"], env=env)
    assert done.exit_code == 4, done.output
    assert "without a token and its lifetime" in done.output
    assert not list((tmp_path / ".config").rglob("*.json"))


# Would fail if: the CLI wrote a refusal's detail and hint as the server sent them: what
# answers at --url (a mistyped URL, a server impersonating the broker) could then drive
# the operator's terminal (clear it, retitle it, write the clipboard with OSC 52, hide
# text with the bidi controls), as the listings never let an audit event do.
def test_a_refusal_from_the_server_writes_no_control_character_to_the_terminal(
    server: FakeServer, tmp_path: Path
) -> None:
    raw = ("\x1b", "\x07", "\x9b", "\x85", "\u2028", "\u202e")
    problem = {
        "error_code": "unauthorized",
        "detail": "bad secret\x1b[2J\x1b]52;c;cm0gLXJmIH4=\x07 \x9b31m \u202eevil",
        "hint": "run\x85 login\u2028again\x1b[8m",
    }
    server.answer(Answer(status=401, body=json.dumps(problem).encode()))
    env = cli_env(server.url, str(tmp_path))
    done = CliRunner().invoke(app, ["login"], env=env)
    assert done.exit_code == 3, done.output
    assert not [c for c in done.output if c in raw], repr(done.output)
    assert "bad secret\\u001b[2J" in done.output  # shown escaped, the rest as written
