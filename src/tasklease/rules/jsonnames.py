"""JSON objects that give a member name twice: found, so that a reader which must agree
with every other parser of the same bytes can refuse them (RFC 8259 section 4).

Standard library only, like the rest of ``tasklease.rules``.
"""

from __future__ import annotations

import json

from tasklease.rules._codec import _DuplicateKeyError, _object_without_duplicates

__all__ = ["repeated_name"]

# Names only: numbers and constants are the caller's decoder's to judge.
_PAIRS = json.JSONDecoder(object_pairs_hook=_object_without_duplicates)


def repeated_name(data: bytes) -> str | None:
    """The first member name that an object of the JSON text ``data`` repeats, or
    ``None``. RFC 8259 section 4 leaves such an object's meaning to each parser (most keep
    the last value, some the first), so a reader that must agree with every other one
    refuses it. ``None`` too for text that is not JSON: its own decoder answers that.
    Nesting must be bounded before (``http.middleware.json_nesting_error``)."""
    try:
        _PAIRS.decode(data.decode("utf-8"))
    except _DuplicateKeyError as exc:
        return str(exc.args[0])
    except (ValueError, RecursionError):  # not UTF-8 or not JSON
        return None
    return None
