"""The shapes of our credentials and secrets, found anywhere in a text.

One definition for every place that must never keep one: the audit log's sanitizer
(``core.auditformat``), revocation targets (``core.revoking``), offline blocks' ids
(``rules.attenuation``), request ids (``http.middleware``) and error answers
(``http.problems``). A token is a compact JWS (its header a JSON object, so base64url
``eyJ``) or a by-reference handle (``tlr_`` and 43 base64url characters); a secret
(a launch token, a client secret) is 64 hexadecimal characters. A run of 64 or more hex
characters counts whatever surrounds it and whatever its case: ``task_<secret>`` or a
secret in capitals is still the secret.

Each shape is found in time linear in the text, whatever the text (audit details and
revocation targets are partly a caller's). A JWT is found from the start of the word it is
in (group 1 is what precedes it there), never from each ``eyJ`` in that word: scanning the
word to its end from each of them is quadratic when no dot ends it.
"""

from __future__ import annotations

import re

__all__ = [
    "HEX_SECRET",
    "JWT",
    "REFERENCE",
    "holds_credential",
    "holds_secret",
    "is_placeholder",
    "redacted",
]

JWT = re.compile(
    r"(?<![A-Za-z0-9_-])(?>([A-Za-z0-9_-]*?)eyJ)[A-Za-z0-9_-]*+\.[A-Za-z0-9_-]*+\.[A-Za-z0-9_-]*+"
)
REFERENCE = re.compile(r"tlr_[A-Za-z0-9_-]{43}")
HEX_SECRET = re.compile(r"[0-9A-Fa-f]{64,}")


# Words of the placeholders that deploy/ and the docs show where a secret goes
# (deploy/env.example, deploy/kubernetes/secret.example.yaml), looked for in a secret's
# letters and digits, lowercased: a copied example must not become a broker's secret.
_PLACEHOLDER_WORDS = ("changeme", "replacewith", "replaceme", "placeholder")


def is_placeholder(secret: str) -> bool:
    """True when ``secret`` holds the placeholder of an example (``change-me``,
    ``replace-with-a-long-random-passphrase``): the one rule for the admin secret
    (``core.passwords.secret_weakness``) and the key passphrase (``keystore.file``)."""
    folded = "".join(ch for ch in secret.lower() if ch.isalnum())
    return any(word in folded for word in _PLACEHOLDER_WORDS)


def holds_credential(text: str) -> bool:
    """True when ``text`` carries a token (JWT or by-reference) anywhere in it."""
    return JWT.search(text) is not None or REFERENCE.search(text) is not None


def holds_secret(text: str) -> bool:
    """True when ``text`` carries something shaped like one of our secrets."""
    return HEX_SECRET.search(text) is not None


def redacted(text: str) -> str:
    """``text`` with every token and secret in it replaced by a marker of its kind
    (``[REDACTED:jwt]``, ``[REDACTED:reference]``, ``[REDACTED:hex]``, as the audit log's
    sanitizer writes them); ``text`` itself when it holds none, the common case."""
    if "eyJ" not in text and "tlr_" not in text and len(text) < 64:
        return text
    out = JWT.sub(r"\g<1>[REDACTED:jwt]", text)
    out = REFERENCE.sub("[REDACTED:reference]", out)
    return HEX_SECRET.sub("[REDACTED:hex]", out)
