"""Attested-fact patterns and what a claim attests (``tasklease.rules.attest``)."""

from __future__ import annotations

import pytest

from tasklease.rules.attest import LAUNCH_TOKEN, Attestation, fact_matches, facts_match


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
