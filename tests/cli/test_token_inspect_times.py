"""``tasklease token inspect`` shows a token someone hands the operator, whatever its
claims say: a time claim no calendar holds (``exp`` in the year three million, an
``iat`` of 1e300, a negative ``nbf``) made ``datetime`` raise ``ValueError`` or
``OverflowError`` out of the command, a traceback in place of the token. Such a time is
shown as written, and the expiry in words still says how far off it is."""

from __future__ import annotations

import json

import pytest
from cli_runner import CliRunner

from tasklease.cli.main import app
from tasklease.rules import jws


def _token(claims: str) -> str:
    header = jws.b64url_encode(b'{"alg":"EdDSA","typ":"at+jwt","kid":"k"}')
    payload = jws.b64url_encode(claims.encode())
    return f"{header}.{payload}.{jws.b64url_encode(b'x' * 64)}"


CLAIMS = [
    '{"sub":"a","exp":99999999999999}',
    '{"sub":"a","exp":-100000000000000000000}',
    '{"sub":"a","iat":1e300,"exp":1}',
    '{"sub":"a","nbf":-1e300}',
    '{"sub":"a","oiat":1e20}',
    '{"sub":"a","exp":1e300}',
    '{"sub":"a","exp":1' + "0" * 400 + "}",  # an integer no float holds
    '{"sub":"a","exp":-1' + "0" * 400 + "}",
]


@pytest.mark.parametrize("claims", CLAIMS)
@pytest.mark.parametrize("as_json", [False, True])
def test_a_time_no_calendar_holds_is_shown_as_written(claims: str, as_json: bool) -> None:
    args = ["token", "inspect", "--offline", _token(claims)] + (["--json"] if as_json else [])
    result = CliRunner().invoke(app, args, env={"COLUMNS": "200"})
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    assert result.exit_code == 0, result.output
    if as_json:
        assert json.loads(result.stdout)["claims"]["sub"] == "a"
    else:
        assert "sub" in result.stdout
