"""A request's JSON body decoded into its wire shape, strictly: bounded nesting and no
member name given twice."""

from __future__ import annotations

from typing import TypeVar

import msgspec

from tasklease.core.errors import InvalidRequest
from tasklease.rules.jsonnames import json_nesting_error, repeated_name

__all__ = ["decode_json_body"]

T = TypeVar("T")
_NOT_JSON = ("malformed JSON body", "malformed body: send a form or JSON")


def decode_json_body(raw: bytes, kind: type[T], *, form_too: bool = False) -> T:
    """``raw``, a non-empty JSON body, as ``kind``; ``form_too`` says the route takes a
    form as well (said when the body is not JSON).

    A name given twice in one object is refused rather than read as its last value (what
    msgspec and most parsers do) or its first (what others do): a proxy, a log or a
    policy engine that read the same bytes must not see another request than the broker.

    Raises:
        InvalidRequest: nested too deeply, a name given twice, not JSON, or not a ``kind``.
    """
    nested = json_nesting_error(raw)  # the envelope refused these already; stay safe alone
    if nested is not None:
        raise InvalidRequest(nested)
    repeated = repeated_name(raw)
    if repeated is not None:
        shown = f"`{repeated}`" if len(repeated) <= 64 and repeated.isprintable() else "a name"
        raise InvalidRequest(f"malformed JSON body: {shown} is given twice in one object")
    try:
        return msgspec.json.decode(raw, type=kind)
    except msgspec.ValidationError as exc:
        raise InvalidRequest(f"malformed JSON body: {exc}") from None
    except (msgspec.DecodeError, RecursionError):
        raise InvalidRequest(_NOT_JSON[form_too]) from None
