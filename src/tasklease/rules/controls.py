"""The characters no line we write may hold as they are: terminal controls, line breaks
and the Unicode bidirectional controls.

C0 controls (U+0000-U+001F), DEL (U+007F), C1 controls (U+0080-U+009F: U+0085, NEL, and
U+009B, the 8-bit CSI, among them) and the Unicode line and paragraph separators (U+2028,
U+2029). Each either drives a terminal or ends a line for some reader (``str.splitlines``,
many log shippers), so a caller's text holding one could rewrite an operator's screen or
split one record into two. And the bidirectional controls (the marks U+200E, U+200F and
U+061C, the embeddings and overrides U+202A-U+202E, the isolates U+2066-U+2069), which
reorder how the rest of a line *displays* (Trojan Source, CVE-2021-42574): a caller's
name holding U+202E could show the fields after it reversed, or in another order than
they are stored. No legitimate name needs one to be shown; text in a right-to-left
script is shown in its order without them. One definition for the audit log's sanitizer
(``core.auditformat``: each but a tab becomes a space before an event is stored) and the
CLI's listings (``cli._output``: each is shown escaped, ``\\u009b``, so an event stored
before the sanitizer knew C1 and the separators reaches no terminal raw). JSON lines (the
service log, ``tasklease audit export``) are ASCII, which escapes these and the rest
(``tasklease.logs.json_line``).
"""

from __future__ import annotations

__all__ = ["BIDI_CONTROLS", "CONTROLS", "escaped"]

BIDI_CONTROLS: frozenset[int] = frozenset(
    (0x061C, 0x200E, 0x200F, *range(0x202A, 0x202F), *range(0x2066, 0x206A))
)
CONTROLS: frozenset[int] = frozenset(
    (*range(0x20), *range(0x7F, 0xA0), 0x2028, 0x2029, *BIDI_CONTROLS)
)

# Tab and line feed are the caller's to handle: a table cell may hold lines, a
# tab-separated line replaces both, and JSON text has its own line feeds between values.
_ESCAPES = {c: f"\\u{c:04x}" for c in CONTROLS if c not in (0x09, 0x0A)}


def escaped(text: str) -> str:
    """``text`` with every character of :data:`CONTROLS` but tab and line feed written as
    ``\\uXXXX`` (what JSON writes for it, so JSON text stays JSON); ``text`` itself when
    it holds none, the common case."""
    if text.isprintable():  # false for every character of CONTROLS
        return text
    return text.translate(_ESCAPES)
