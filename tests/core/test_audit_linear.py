"""The audit sanitizer's cost is linear in what it is given, whatever that is.

Refusals audit text the caller chose (a request path, an attestor's name) before anything
authenticates the caller, and every event is sanitized on the way to the log. Patterns
that backtrack quadratically made a 16 KB path cost seconds of a worker's time; the
rules now find what they redact in one pass, and a text longer than the cap is cut
*before* they run, keeping no start of a secret the cut goes through.

The two hang detectors below run the sanitizer on a megabyte in a child process with a
generous deadline: the quadratic patterns needed hours for it, the linear ones need well
under a second. They measure nothing; they notice a hang.
"""

from __future__ import annotations

import re
import subprocess
import sys

from hypothesis import given
from hypothesis import strategies as st

from tasklease.core.auditformat import MAX_DETAIL, AuditEntry, clipped, sanitize
from tasklease.core.errors import Unavailable
from tasklease.core.kernel import with_denial

JWT = "eyJhbGciOiJFZERTQSJ9.eyJzdWIiOiJhIn0.c2lnbmF0dXJlLWJ5dGVz"
HEX = "0123456789abcdef" * 4

# Text that made a pattern scan to the end of a run from each of its starts: a key word
# then a long hyphenated word with no "=", a secret word repeated with no "=", a long
# dotted word with no "@" after it, "eyJ" repeated with no dot. Each with a redaction
# before it, so the answer is checked as well as its arrival.
_ADVERSARIAL = """\
import sys
import tasklease.core.auditformat as auditformat
if sys.argv[1] == "uncapped":
    auditformat.MAX_DETAIL = 10**9  # the rules themselves on the whole megabyte
size = 1 << 20
head = "user ada@example.com password=hunter2 "
cases = {
    "key": "secret " + "a-" * (size // 2),
    "key-repeated": "secret" * (size // 6) + " x",
    "address": "@ " + "a." * (size // 2),
    "token": "eyJ" * (size // 3),
}
for name, text in cases.items():
    out = auditformat.sanitize(head + text)
    expected = "user a***@example.com password=***REDACTED*** " + text
    if sys.argv[1] == "uncapped":
        assert out == expected, name
    else:
        # A word the cut goes through is kept unless it may hold a secret ("secret", "eyJ").
        kept = out.removesuffix("[truncated]")
        assert len(out) <= 2048 and len(kept) > 40 and expected.startswith(kept), name
print("ok")
"""


def _run_adversarial(mode: str) -> None:
    ran = subprocess.run(
        [sys.executable, "-c", _ADVERSARIAL, mode], capture_output=True, text=True, timeout=60
    )
    assert ran.returncode == 0, ran.stderr[-2000:]
    assert ran.stdout.strip() == "ok"


def test_every_rule_is_linear_on_the_text_that_made_them_backtrack() -> None:
    _run_adversarial("uncapped")


def test_a_text_longer_than_the_cap_is_cut_before_any_rule_runs() -> None:
    _run_adversarial("capped")


# --- the cut keeps no part of a secret -------------------------------------------------


def _straddling(secret: str, into: int) -> str:
    """A detail over the cap whose ``secret`` starts ``into`` characters before the cut."""
    cut = MAX_DETAIL - len("[truncated]")
    return "z " * ((cut - into) // 2) + secret + " tail" * 1000


def test_a_secret_the_cut_goes_through_is_dropped_not_kept_in_part() -> None:
    reference = "tlr_" + "A" * 43
    cases = {  # what is written: what of it must not be kept
        JWT: JWT,
        HEX: HEX,
        reference: reference,
        f"task_{HEX}": HEX,
        "ada.lovelace@example.com": "ada.lovelace",
        "password=correct-horse": "correct-horse",
    }
    for written, secret in cases.items():
        for into in range(1, len(written)):
            out = sanitize(_straddling(written, into))
            assert out.endswith("[truncated]") and len(out) <= MAX_DETAIL
            kept = out.removesuffix("[truncated]").rstrip().rsplit(" ", 1)[-1]
            pieces = {secret[i : i + 3] for i in range(len(secret) - 2)}
            assert not any(piece in kept for piece in pieces), (written, into, kept)


def test_a_long_word_without_the_mark_of_a_secret_is_cut_where_the_cap_falls() -> None:
    out = sanitize("plain " + "z" * 10_000)
    assert len(out) == MAX_DETAIL and out.endswith("z[truncated]")
    hexish = sanitize("plain " + "z" * (MAX_DETAIL - 60) + "deadbeef" * 20)
    assert hexish.endswith("z[truncated]")  # hex digits at the cut may start a secret


def test_clipped_bounds_a_field_and_marks_the_cut() -> None:
    assert clipped("/v1/tasks/t1", 64) == "/v1/tasks/t1"
    long = "/v1/admin/tasks/" + "z" * 1000
    out = clipped(long, 512)
    assert len(out) == 512 and out.endswith("[truncated]") and long.startswith(out[:-11])
    assert clipped(f"/v1/x/{JWT}{JWT}", 40) == "[truncated]"
    assert clipped("a b " + "c" * 100, 20) == "a b [truncated]"  # hex digits at the cut
    assert clipped("/v1/tasks/" + "e" * 100, 30) == "/v1/tasks/[truncated]"
    url = "https://a.example/x/secret-" + "z" * 100
    assert clipped(url, 60) == "[truncated]"
    assert clipped(url, 60, breaks="/") == "https://a.example/x/[truncated]"


# --- what redaction keeps --------------------------------------------------------------


def test_an_unclosed_quoted_value_is_redacted_to_the_end() -> None:
    out = sanitize('login failed: password="correct horse battery staple')
    assert out == "login failed: password=***REDACTED***"
    assert sanitize('password="a b" c') == "password=***REDACTED*** c"


def test_the_denial_id_survives_a_rule_that_redacts_to_the_end() -> None:
    exc = Unavailable("x")
    entry = with_denial(exc, AuditEntry("x", detail="pem: -----BEGIN PRIVATE KEY-----\nMIIE"))
    assert sanitize(entry.detail) == f"pem: [REDACTED:pem] | denial={exc.denial_id}"
    quoted = with_denial(exc, AuditEntry("x", detail='secret="never closed'))
    assert sanitize(quoted.detail) == f"secret=***REDACTED*** | denial={exc.denial_id}"


# The patterns as they were (quadratic on long text, exact on short): on text that only
# their rule can match, the sanitizer must redact exactly what they would.
_EMAIL_BEFORE = re.compile(
    r"\b([A-Za-z0-9._%+-])[A-Za-z0-9._%+-]*@([A-Za-z0-9.-]+\.[A-Za-z]{2,})\b"
)
_JWT_BEFORE = re.compile(r"eyJ[A-Za-z0-9_-]*\.[A-Za-z0-9_-]*\.[A-Za-z0-9_-]*")
_KEY_BEFORE = re.compile(
    r"(?i)\b([\w-]*(?:secret|password)[\w-]*)(\s*[=:]\s*)(\"[^\"]*\"|'[^']*'|[^\s,;|\]]+)"
)


def _texts(pieces: list[str]) -> st.SearchStrategy[str]:
    return st.lists(st.sampled_from(pieces), max_size=16).map("".join)


@given(_texts(["a", "b", "c", "1", ".", "_", "-", "%", "+", "@", " ", "é",
                                "co", "x.io"]))  # fmt: skip
def test_addresses_are_masked_as_the_pattern_did(text: str) -> None:
    expected = _EMAIL_BEFORE.sub(lambda m: f"{m.group(1)}***@{m.group(2)}", text)
    assert sanitize(text) == expected


@given(_texts(["eyJ", "a", "_", "-", ".", " ", ",", "é", "1"]))
def test_tokens_are_redacted_as_the_pattern_did(text: str) -> None:
    assert sanitize(text) == _JWT_BEFORE.sub("[REDACTED:jwt]", text)


@given(_texts(["secret", "Password", "a", "_", "-", "=", ":", " ", ",",
                                ";", "|", "]", "é", "1"]))  # fmt: skip
def test_secret_values_are_redacted_as_the_pattern_did(text: str) -> None:
    # Unquoted values: an unclosed quote now runs to the end, where the pattern stopped
    # at the first space (test_an_unclosed_quoted_value_is_redacted_to_the_end).
    expected = _KEY_BEFORE.sub(lambda m: f"{m.group(1)}{m.group(2)}***REDACTED***", text)
    assert sanitize(text) == expected
