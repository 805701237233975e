"""A policy nested too deeply for Cedar's parser or for the reading of its JSON form is
refused whole, before Cedar sees it (``core.policy``: :data:`MAX_POLICY_NESTING`,
:data:`MAX_POLICY_OPERATORS`); strings and comments do not count, and each policy of a
file is counted alone."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import pytest

import tasklease.core.policy as policy
from tasklease.core.policy import (
    DEFAULT_POLICY,
    MAX_POLICY_NESTING,
    MAX_POLICY_OPERATORS,
    PolicyError,
    compile_policies,
)
from tasklease.core.policyreads import reads_of


def _when(condition: str, ident: str = "p") -> str:
    return f'@id("{ident}")\npermit (principal, action, resource) when {{ {condition} }};\n'


def _refusal(text: str) -> str:
    with pytest.raises(PolicyError) as refused:
        compile_policies([("default.cedar", DEFAULT_POLICY), ("deep.cedar", text)], "t")
    return str(refused.value)


def test_brackets_nested_too_deeply_are_refused_before_cedar_parses_them() -> None:
    # 800 parentheses overflow the stack of Cedar's parser: run where a crash fails the test.
    text = _when("(" * 800 + "context.within_ceiling" + ")" * 800)
    ran = subprocess.run(
        [sys.executable, "-c", _COMPILE, text], capture_output=True, text=True, timeout=60
    )
    assert ran.returncode == 0, (ran.returncode, ran.stderr[-2000:])
    assert "deep.cedar: nested too deeply" in ran.stdout
    for opening, closing in (("[", "]"), ("{a: ", "}")):
        deep = opening * (MAX_POLICY_NESTING + 1) + "1" + closing * (MAX_POLICY_NESTING + 1)
        assert "deep.cedar: nested too deeply" in _refusal(_when(f"{deep} == {deep}"))


_COMPILE = """\
import sys
from tasklease.core.policy import PolicyError, compile_policies
try:
    compile_policies([("deep.cedar", sys.argv[1])], "t")
except PolicyError as exc:
    print(exc)
"""


@pytest.mark.parametrize(
    "condition",
    [
        "context.depth" + " + 1" * 500 + " > 0",
        "context.within_ceiling" + " && context.within_ceiling" * 300,
        "context" + ".a" * 600 + " == 1",
        "if context.within_ceiling then true else " * 300 + "false",
    ],
    ids=["addition", "conjunction", "attributes", "if"],
)
def test_a_long_chain_of_operators_is_refused(condition: str) -> None:
    # Without a bracket these nest past Python's recursion limit in the JSON form.
    refusal = _refusal(_when(condition))
    assert "deep.cedar: a policy has too many operators" in refusal


def test_a_policy_at_the_limits_compiles() -> None:
    # `.` and `>` count: the chain holds the rest.
    chain = "context.depth" + " + 1" * (MAX_POLICY_OPERATORS - 2) + " > 0"
    # The `when` braces are one level.
    nested = (
        "(" * (MAX_POLICY_NESTING - 1) + "context.within_ceiling" + ")" * (MAX_POLICY_NESTING - 1)
    )
    compiled = compile_policies([("a.cedar", _when(chain, "chain") + _when(nested, "nested"))], "t")
    assert compiled.ids == ("chain", "nested")
    assert "too many operators" in _refusal(_when(chain.replace(" > 0", " + 1 > 0")))
    assert "nested too deeply" in _refusal(_when(f"({nested})"))


def test_strings_and_comments_do_not_count() -> None:
    brackets = "(" * 100 + "[{" * 100
    text = (
        f"// {brackets} {' + 1' * 1000}\n"
        + _when(f'context.human == "{brackets} \\" {" && x" * 300} \\\\" // {brackets}\n')
        + f"// and after the policy {brackets}\n"
    )
    compiled = compile_policies([("a.cedar", text)], "t")
    assert compiled.ids == ("p",)


def test_each_policy_of_a_file_is_counted_alone() -> None:
    chain = "context.depth" + " + 1" * (MAX_POLICY_OPERATORS - 2) + " > 0"
    text = "".join(_when(chain, f"p{i}") for i in range(4))
    assert len(compile_policies([("a.cedar", text)], "t").ids) == 4


def test_what_the_shape_misses_is_refused_not_raised(monkeypatch: pytest.MonkeyPatch) -> None:
    # The JSON form read past the recursion limit: a refusal, never a RecursionError.
    monkeypatch.setattr(policy, "_shape_error", lambda text: None)
    assert "deep.cedar: nested too deeply" in _refusal(
        _when("context.depth" + " + 1" * 600 + " > 0")
    )


def test_the_reads_of_a_form_too_deep_to_walk_are_not_remembered() -> None:
    body: dict[str, Any] = {".": {"left": {"Var": "context"}, "attr": "depth"}}
    for _ in range(5000):
        body = {"+": {"left": body, "right": {"Value": 1}}}
    est = {
        "staticPolicies": {
            "policy0": {
                "effect": "permit",
                "principal": {"op": "All"},
                "action": {"op": "All"},
                "resource": {"op": "All"},
                "conditions": [
                    {"kind": "when", "body": {">": {"left": body, "right": {"Value": 0}}}}
                ],
            }
        }
    }
    assert reads_of(est) is None
