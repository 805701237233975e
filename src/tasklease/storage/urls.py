"""Database URLs as they may be shown: in logs, errors and health answers."""

from __future__ import annotations

from urllib.parse import parse_qsl, urlencode, urlsplit

__all__ = ["redact_url"]

# libpq's query parameters that hold a secret (the password, the client key's passphrase).
_SECRET_PARAMETERS = frozenset({"password", "sslpassword"})


def redact_url(url: str) -> str:
    """``url`` with any password replaced by ``***``, fit for logs and messages: the one
    in the user part and the one a libpq URL may carry as a query parameter
    (``?password=...``, ``sslpassword``)."""
    try:
        parts = urlsplit(url)
        password = parts.password
        query = parse_qsl(parts.query, keep_blank_values=True)
    except ValueError:
        return "<unparseable database URL>"
    if password is not None:
        host = parts.netloc.rsplit("@", 1)[-1]
        parts = parts._replace(netloc=f"{parts.username or ''}:***@{host}")
    if any(name.lower() in _SECRET_PARAMETERS for name, _ in query):
        shown = [(n, "***" if n.lower() in _SECRET_PARAMETERS else v) for n, v in query]
        parts = parts._replace(query=urlencode(shown, safe="*"))
    elif password is None:
        return url
    return parts.geturl()
