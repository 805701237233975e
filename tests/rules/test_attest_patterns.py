"""Attested-fact patterns and what a claim attests (``tasklease.rules.attest``)."""

from __future__ import annotations

import re
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tasklease.rules.attest import (
    LAUNCH_TOKEN,
    MAX_FACT_CHARS,
    Attestation,
    fact_matches,
    facts_match,
)


# Would fail if: a glob matched a prefix of the value rather than the whole of it, so that
# a policy or requirement naming one branch or repository admitted a longer name.
@pytest.mark.parametrize(
    ("pattern", "value"),
    [
        ("refs/heads/ma?n", "refs/heads/main-evil"),
        ("org/repo-*/x", "org/repo-1/x/y"),
        ("billing-?", "billing-12"),
        ("*-prod", "eu-prod-shadow"),
    ],
)
def test_a_glob_matches_the_whole_value_never_a_prefix(pattern: str, value: str) -> None:
    assert not fact_matches(pattern, value)
    attestation = Attestation("oidc", facts={"ref": value})
    assert facts_match({"ref": pattern}, attestation) == "ref"


def test_a_glob_still_matches_what_it_names() -> None:
    assert fact_matches("refs/heads/ma?n", "refs/heads/main")
    assert fact_matches("org/repo-*/x", "org/repo-1/x")
    assert fact_matches("*-prod", "eu-prod")


# Would fail if: a launch-token claim answered for a name it carries, though nothing about
# it was attested: not its type, subject, issuer or any fact.
def test_a_launch_token_claim_attests_nothing_it_carries() -> None:
    claim = Attestation(
        LAUNCH_TOKEN,
        attestor="prod",
        issuer="https://issuer.example",
        subject="system:serviceaccount:billing:runner",
        facts={"namespace": "billing"},
        declared={"model": "acme/gpt/7"},
    )
    assert not claim.proved
    for name in ("type", "attestor", "iss", "sub", "namespace", "model"):
        assert claim.attested(name) is None
    assert facts_match({"namespace": "billing"}, claim) == "namespace"
    assert facts_match({"type": LAUNCH_TOKEN}, claim) == "type"


# Would fail if: a glob were matched by a backtracking regular expression (``.*`` per
# ``*``): a pattern of k stars costs up to n**k steps on a value it does not match, so
# an attestor policy of four stars held the broker for seconds on one registration whose
# attested value (a branch name, a service account) its holder chose.
def test_a_glob_of_many_stars_fails_fast_on_a_long_value() -> None:
    value = "a" * 150  # at most MAX_FACT_CHARS; a backtracking match took seconds
    started = time.perf_counter()
    assert not fact_matches("*a*a*a*a*b", value)
    assert fact_matches("*a*a*a*a*", value)
    assert time.perf_counter() - started < 0.5
    assert len(value) <= MAX_FACT_CHARS


_GLOBS = st.text(alphabet="ab*?", max_size=8)
_VALUES = st.text(alphabet="ab\n.", max_size=10)


@settings(max_examples=300, deadline=None)
@given(pattern=_GLOBS, value=_VALUES)
def test_a_glob_matches_as_a_whole_value_regular_expression_would(pattern: str, value: str) -> None:
    """``*`` any run (line breaks too), ``?`` one character, the rest itself, the whole
    value: the meaning the patterns have always had."""
    expected = re.fullmatch(
        "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern),
        value,
        re.DOTALL,
    )
    if "*" in pattern or "?" in pattern:
        assert fact_matches(pattern, value) == (expected is not None)
    else:
        assert fact_matches(pattern, value) == (pattern == value)
