"""The readers of numeric claims: a JSON boolean is no integer, and a number no float
holds finitely is no number (broker, offline verifier and client assertions alike)."""

from __future__ import annotations

import math

import pytest

from tasklease.rules.claims import ClaimRejected, finite_number, int_claim, standing_claims


@pytest.mark.parametrize("value", [True, False])
def test_int_claim_refuses_a_boolean(value: bool) -> None:
    with pytest.raises(ClaimRejected) as info:
        int_claim({"exp": value}, "exp")
    assert info.value.reason == "claim exp missing or not an integer"
    assert int_claim({"exp": 1_800_000_000}, "exp") == 1_800_000_000


def test_standing_claims_refuse_booleans() -> None:
    for name in ("oiat", "rnc", "max_exp"):
        with pytest.raises(ClaimRejected):
            standing_claims({name: True}, 1_800_000_000)
    assert standing_claims({}, 5) == (5, 0, "", 0)


@pytest.mark.parametrize("value", [math.inf, -math.inf, math.nan, 10**400, True, "1", None])
def test_finite_number_refuses_what_is_no_finite_number(value: object) -> None:
    assert finite_number(value) is None


def test_finite_number_reads_ints_and_floats() -> None:
    assert finite_number(1_800_000_000) == 1_800_000_000.0
    assert finite_number(1.5) == 1.5
