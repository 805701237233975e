"""Every field a broker returns that the CLI prints reaches the terminal with its
controls escaped (cli._common's consoles render no control character), not only the
error lines and the listings: what answers at --url (a mistyped URL, a server
impersonating the broker) could otherwise drive the operator's terminal with an id, a
kid or a status (clear it, write the clipboard with OSC 52, reorder a line with a bidi
override).

Against a fake broker on loopback (answers_support) that answers with such fields.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from answers_support import Answer, FakeServer, cli_env, serving
from cli_runner import CliRunner

from tasklease.cli.main import app

RAW = ("\x1b", "\x07", "\x9b", "\x85", "\u2028", "\u202e")
HOSTILE = "x\x1b]52;c;cm0gLXJmIH4=\x07\x9b31m\x85\u2028\u202eevil"


@pytest.fixture(scope="module")
def server() -> Iterator[FakeServer]:
    with serving() as fake:
        yield fake


def _run(server: FakeServer, tmp_path: Path, args: list[str], *answers: Answer) -> str:
    server.answer(*answers)
    env = cli_env(server.url, str(tmp_path))
    done = CliRunner().invoke(app, args, env=env)
    return done.output


SIGN_IN = Answer(body=b'{"access_token": "t", "token_type": "Bearer", "expires_in": 300}')


def _answer(document: dict[str, object]) -> Answer:
    return Answer(body=json.dumps(document).encode())


ROTATED = _answer({"kid": HOSTILE, "previous_kid": HOSTILE, "kids": []})
HEALTH = _answer({"status": HOSTILE, HOSTILE: HOSTILE})


# Would fail if: a line quoting one field of the answer ("new signing key <kid>") or a
# table of its fields (status) wrote it as the server sent it.
@pytest.mark.parametrize(
    ("args", "answers"),
    [
        (["keys", "rotate"], [SIGN_IN, ROTATED]),
        (["status"], [SIGN_IN, HEALTH, _answer({"keys": []})]),
    ],
    ids=["keys-rotate", "status"],
)
def test_a_broker_s_fields_reach_the_terminal_escaped(
    server: FakeServer, tmp_path: Path, args: list[str], answers: list[Answer]
) -> None:
    output = _run(server, tmp_path, args, *answers)
    assert not [c for c in output if c in RAW], repr(output)
    assert "x\\u001b]52;c;" in output, output  # shown escaped
