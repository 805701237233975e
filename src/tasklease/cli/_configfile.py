"""The config file as the local commands write it: TOML values, and settings changed in a
file that is otherwise kept as it is.

``tasklease init`` writes a new file; ``init --force`` keeps the operator's file and
replaces only what it makes anew (the admin secret's hash): a file rewritten from scratch
lost every setting in it (critical scopes, trust domain, ...) without a word.
"""

from __future__ import annotations

import json
import re
import tomllib
from collections.abc import Iterable
from typing import Any

__all__ = ["setting_line", "toml_string", "with_settings"]


def toml_string(value: str) -> str:
    """``value`` as a TOML basic string (JSON's escapes are TOML's)."""
    return json.dumps(value, ensure_ascii=False)


def setting_line(name: str, value: str) -> str:
    """``name = "value"``: one line of a flat config file."""
    return f"{name} = {toml_string(value)}"


def _name_of(line: str) -> str | None:
    match = re.match(r"\s*([A-Za-z0-9_-]+)\s*=", line)
    return match[1] if match else None


def with_settings(text: str, replace: dict[str, str], add: Iterable[str] = ()) -> str:
    """``text`` (a config file) with each setting of ``replace`` set to its value (its line
    replaced, or appended when absent), and each line of ``add`` appended whose setting the
    file does not hold; every other line stays as it was.

    Raises:
        ValueError: ``text`` is not valid TOML, or the result would not hold exactly the
            file's settings with those changes (a value written over several lines);
            nothing is returned that says more or less than asked.
    """
    try:
        before: dict[str, Any] = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"it is not valid TOML: {exc}") from None
    lines = text.splitlines()
    left = dict(replace)
    for index, line in enumerate(lines):
        name = _name_of(line)
        if name in left:
            lines[index] = setting_line(name, left.pop(name))
    lines += [setting_line(name, value) for name, value in left.items()]
    added = {}
    for line in add:
        name = _name_of(line)
        if name is not None and name not in before and name not in replace:
            lines.append(line)
            added.update(tomllib.loads(line))
    result = "\n".join(lines) + "\n"
    try:
        after = tomllib.loads(result)
    except tomllib.TOMLDecodeError:
        after = None
    if after != {**before, **replace, **added}:
        raise ValueError(
            f"cannot change {', '.join(replace)} in it without touching other settings: "
            "write each of those settings on a line of its own"
        )
    return result
