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

    The password is taken to run from the first ``:`` after ``://`` to the last ``@``,
    wider than libpq's user part (up to the first ``@`` before any ``/``) and than a URL
    parser's: a password holding ``#`` or ``?`` ends a URL's authority early, and one
    holding an unencoded ``/`` or ``@`` is read by libpq as a host, port or database
    name, yet it is the operator's password all the same. A URL without a password whose
    query holds an ``@`` after a ``:`` is shown with more masked than needed.
    """
    masked = url
    scheme, sep, rest = url.partition("://")
    if sep:
        colon, end = rest.find(":"), rest.rfind("@")
        if 0 <= colon < end:
            masked = f"{scheme}://{rest[:colon]}:***@{rest[end + 1 :]}"
    try:
        parts = urlsplit(masked)
        query = parse_qsl(parts.query, keep_blank_values=True)
    except ValueError:
        return "<unparseable database URL>"
    if any(name.lower() in _SECRET_PARAMETERS for name, _ in query):
        shown = [(n, "***" if n.lower() in _SECRET_PARAMETERS else v) for n, v in query]
        return parts._replace(query=urlencode(shown, safe="*")).geturl()
    return masked
