"""Resource and audience values (RFC 8707 section 2, RFC 8693 section 2.1) as the broker
reads them from a request, a launch token or a policy."""

from __future__ import annotations

import pytest

from tasklease.core.audience import (
    MAX_RESOURCES,
    validate_resource,
    validate_resource_uri,
    validate_resources,
)
from tasklease.core.errors import InvalidTarget


def test_a_resource_or_audience_is_kept_as_given() -> None:
    assert validate_resource("https://rs.example/api?x=1", field="audience") == (
        "https://rs.example/api?x=1"
    )
    assert validate_resource("billing#2", field="audience") == "billing#2"  # a name, no URI
    assert validate_resource(None, field="audience") is None


# Would fail if: an audience URI with a fragment were taken (RFC 8707 section 2 forbids
# it in a resource; the audience field reaches the same token claim without the edge's
# resource check).
@pytest.mark.parametrize(
    "value",
    ["https://rs.example/api#admin", "urn:rs:example#x", "https://rs example", "x" * 513, "\x7f"],
)
def test_a_malformed_audience_is_refused(value: str) -> None:
    with pytest.raises(InvalidTarget):
        validate_resource(value, field="audience")


@pytest.mark.parametrize("value", ["billing", "/relative/path", "https://rs.example/#f", 3])
def test_a_resource_indicator_is_an_absolute_uri_without_a_fragment(value: object) -> None:
    with pytest.raises(InvalidTarget, match="absolute URI"):
        validate_resource_uri(value)
    with pytest.raises(InvalidTarget, match="absolute URI"):
        validate_resource_uri(["https://rs.example/ok", value])
    validate_resource_uri(["https://rs.example/ok", None])


def test_a_resource_list_is_bounded() -> None:
    many = [f"https://rs{i}.example" for i in range(MAX_RESOURCES)]
    assert validate_resources(many, field="resources") == tuple(many)
    with pytest.raises(InvalidTarget, match="at most"):
        validate_resources([*many, "https://one-more.example"], field="resources")
