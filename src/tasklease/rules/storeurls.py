"""Which ``database`` settings name a store this build can open: the one rule of the
configuration's check (so ``serve``, ``doctor`` and every local command stop at a bad one
with the setting named) and of ``tasklease.storage.open_store`` (which opens them).

* a filesystem path, or ``sqlite:///absolute/path`` (no host, query or fragment): SQLite;
* ``memory://`` exactly: the in-process store of tests;
* ``postgresql://...`` or ``postgres://...``: PostgreSQL.

Whether the file exists, or the server answers, is not this rule's: it judges the text.
No message quotes the setting, which may hold a password: a URL that does not parse, a
PostgreSQL URL with whitespace (libpq would read what follows as more parameters, a
``password=`` among them), and a libpq ``keyword=value`` string, which would be taken for
a SQLite path, are refused as such.
"""

from __future__ import annotations

import re
from urllib.parse import SplitResult, unquote, urlsplit

__all__ = ["StoreURL", "parse_store_url"]

StoreURL = tuple[str, str]
"""``(kind, where)``: ``("sqlite", path)``, ``("memory", "")`` or ``("postgresql", url)``."""


_NOT_SHOWN = "it is not shown here: it may hold a password"

# A libpq keyword=value connection string (``host=db password=...``), which libpq and
# psycopg take but no store here opens: read as a SQLite path, it would be named in full.
_LIBPQ_PAIR = re.compile(
    r"(?:^|\s)(?:host|hostaddr|port|dbname|user|password|sslmode|sslpassword|passfile|service)"
    r"\s*=",
    re.IGNORECASE,
)


def parse_store_url(url: str) -> StoreURL:
    """The store ``url`` names and where it is.

    Raises:
        ValueError: the URL is empty, malformed, or of a scheme no store here opens; the
            message says which and what is expected.
    """
    if "://" not in url:
        if not url:
            raise ValueError("store URL is empty")
        if _LIBPQ_PAIR.search(url):
            raise ValueError(
                "a libpq keyword=value string is not a setting the broker reads: give a "
                f"postgresql:// URL (docs/postgresql.md) or a SQLite path; {_NOT_SHOWN}"
            )
        return "sqlite", url
    try:
        parts: SplitResult = urlsplit(url)
    except ValueError:  # "Invalid IPv6 URL" (libpq's several hosts are not)
        raise ValueError(
            f"the URL does not parse (check its brackets and percent-encoding); {_NOT_SHOWN}"
        ) from None
    scheme = parts.scheme.lower()
    if scheme == "memory":
        if parts.netloc or parts.path or parts.query:
            raise ValueError("the memory store URL is exactly memory://")
        return "memory", ""
    if scheme == "sqlite":
        if parts.netloc:
            raise ValueError("SQLite URLs name a local file: sqlite:///absolute/path")
        if parts.query or parts.fragment:
            raise ValueError("SQLite URLs take no query or fragment")
        path = unquote(parts.path)
        if not path.startswith("/") or path == "/":
            raise ValueError("SQLite URLs name a local file: sqlite:///absolute/path")
        return "sqlite", path
    if scheme in ("postgresql", "postgres"):
        if any(ch.isspace() for ch in url):
            raise ValueError(
                f"a PostgreSQL URL holds no whitespace (percent-encode it, %20); {_NOT_SHOWN}"
            )
        return "postgresql", url
    raise ValueError(
        f"unsupported store URL scheme {scheme!r} (a SQLite file path or sqlite:///, "
        "or postgresql://)"
    )
