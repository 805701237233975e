"""Database URLs as they may be shown: in logs, errors and health answers."""

from __future__ import annotations

from urllib.parse import parse_qsl, urlencode, urlsplit

__all__ = ["redact_url"]

# libpq's query parameters that hold a secret (the password, the client key's passphrase).
_SECRET_PARAMETERS = frozenset({"password", "sslpassword"})


def redact_url(url: str) -> str:
    """``url`` with any password replaced by ``***``, fit for logs and messages: the one
    in the user part and the one a libpq URL may carry as a query parameter
    (``?password=...``, ``sslpassword``).

    The user part is found as libpq finds it (everything after ``://`` up to the first
    ``@`` that comes before any ``/``), not as a URL parser does: a password holding ``#``
    or ``?`` ends a URL's authority early, but libpq reads it whole, and so must this.
    """
    masked = url
    scheme, sep, rest = url.partition("://")
    if sep:
        end = next((i for i, c in enumerate(rest) if c in "@/"), -1)
        if end >= 0 and rest[end] == "@":
            user, colon, _ = rest[:end].partition(":")
            if colon:
                masked = f"{scheme}://{user}:***@{rest[end + 1 :]}"
    try:
        parts = urlsplit(masked)
        query = parse_qsl(parts.query, keep_blank_values=True)
    except ValueError:
        return "<unparseable database URL>"
    if any(name.lower() in _SECRET_PARAMETERS for name, _ in query):
        shown = [(n, "***" if n.lower() in _SECRET_PARAMETERS else v) for n, v in query]
        return parts._replace(query=urlencode(shown, safe="*")).geturl()
    return masked
