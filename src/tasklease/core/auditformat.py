"""What an audit event is: its entry, the sanitizer every detail passes, and the hash chain.

The hash chain's formats are :mod:`tasklease.rules.auditchain` (where verifiers read
them): ``v1`` for events written before lineage was recorded, ``v2`` for every event
since, which adds the event's tenant, app, human principal and delegation chain root to
the hashed fields. The bytes hashed are the same here, written with a faster encoder.

Details are sanitized *before* hashing: secrets and personal data never reach storage.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime

import msgspec

from tasklease.core.records import AuditEvent
from tasklease.rules.auditchain import GENESIS_HASH, prefix, uncovered_lineage
from tasklease.rules.controls import CONTROLS
from tasklease.rules.secretshapes import HEX_SECRET, JWT, REFERENCE

__all__ = [
    "CURRENT_FORMAT",
    "GENESIS_HASH",
    "MAX_DETAIL",
    "AuditEntry",
    "ChainReport",
    "clipped",
    "content_hash",
    "event_hash",
    "reason_text",
    "sanitize",
    "sanitized_entry",
    "timestamp_seconds",
    "verify_chain",
]

CURRENT_FORMAT = 2
_PREFIXES = {1: prefix(1), 2: prefix(2)}


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """What an operation says about itself, before it is chained."""

    event_type: str
    outcome: str = "success"
    detail: str = ""
    agent_id: str = ""
    task_id: str = ""
    orch_id: str = ""
    resource: str = ""
    deleg_depth: int = 0
    deleg_chain_hash: str = ""
    request_id: str = ""
    # Lineage (format v2): the app the credential descends from, the human it acts for
    # and the root agent of its delegation chain, where they exist. The tenant is the
    # store's, added when the event is chained.
    app_id: str = ""
    principal_ref: str = ""
    chain_root: str = ""


# --- sanitization -----------------------------------------------------------------------
#
# Every rule below runs in time linear in the text, whatever the text: the detail and ids
# of a refusal are partly the caller's, before anything authenticates it. A key that must
# contain a secret word is found from the start of its word only, and committed to once
# found (an atomic group): scanning each word from each of its boundaries, and backing off
# through each secret word in it, is quadratic. E-mail addresses are found by their ``@``
# (``_mask_emails``) for the same reason.

_KEY_PATTERN = (
    r"(?<![\w-])((?>[\w-]*(?:secret|password|passwd|private_key|privkey|token_value|"
    r"api_key|apikey|authorization|credential))[\w-]*+)(\s*+[=:]\s*+)"
)
_SECRET_KV = re.compile(
    r"(?i)" + _KEY_PATTERN +
    # A value redacted already and ended (by ``quoted``, inside a field's quotes) is not
    # read again: the rule would take the quote closing the field for part of it.
    r"(?!\*\*\*REDACTED\*\*\*(?![^\s,;|\]\"'\\]))"
    # A quoted value runs to its closing quote, or to the end of a text cut short, and on
    # to the end of its word (no quote); any other value to the end of its word.
    r"((?:\"[^\"]*+(?:\"|\Z)|'[^']*+(?:'|\Z))[^\s,;|\]\"']*+|[^\s,;|\]]+)"
)
_BEARER = re.compile(r"(?i)\b(bearer|dpop)\s++[A-Za-z0-9._~+/=-]{8,}")
# A text ending where one of these rules would go on to take what follows it as a secret:
# a secret's key with no value yet (group 1), or the word ``bearer`` or ``dpop``.
_OPEN_END = re.compile(r"(?i)(?:" + _KEY_PATTERN + r"|\b(?:bearer|dpop))\Z")
_LOCAL_PART = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._%+-")
_EMAIL_DOMAIN = re.compile(r"[A-Za-z0-9.-]+\.[A-Za-z]{2,}\b")
_PEM = re.compile(r"-----BEGIN [A-Z ]+-----.*?(-----END [A-Z ]+-----|$)", re.S)
# Anything any rule above, or a token's shape (rules.secretshapes), could match contains
# one of these (lower-cased) or 64 hex characters in a row; the rules run only then.
_MARKERS = (
    "eyj", "tlr_", "-----begin", "@", "secret", "passw", "private_key", "privkey",
    "token_value", "api_key", "apikey", "authorization", "credential", "bearer", "dpop",
)  # fmt: skip


_MARKER = re.compile("|".join(re.escape(marker) for marker in _MARKERS))


def _suspect(text: str) -> bool:
    if _MARKER.search(text.lower()) is not None:
        return True
    return len(text) >= 64 and HEX_SECRET.search(text) is not None


def _word_char(char: str) -> bool:
    return char.isalnum() or char == "_"  # what ``\w`` matches in a str pattern


def _mask_emails(text: str) -> str:
    """Every e-mail address as ``a***@example.com``.

    What ``re.sub`` of ``\b([L])[L]*@(DOMAIN)\b`` would give (``L`` the local part's
    characters ``A-Za-z0-9._%+-``; the first character kept is the one at the first word
    boundary of the local part), found from each ``@`` instead: that pattern scans a run
    of local-part characters to its end from each word boundary in it, which is quadratic
    when no ``@`` ends the run.
    """
    parts: list[str] = []
    done = 0  # the text before this is settled
    at = text.find("@")
    while at != -1:
        start = at
        while start > done and text[start - 1] in _LOCAL_PART:
            start -= 1
        first = next(
            (
                i
                for i in range(start, at)
                if (i > 0 and _word_char(text[i - 1])) != _word_char(text[i])
            ),
            None,
        )
        domain = _EMAIL_DOMAIN.match(text, at + 1) if first is not None else None
        if first is not None and domain is not None:
            parts += (text[done:first], text[first], "***@", domain.group())
            done = domain.end()
        at = text.find("@", max(at + 1, done))
    if not parts:
        return text
    parts.append(text[done:])
    return "".join(parts)


_PLAIN_ID = re.compile(r"[A-Za-z0-9._/-]*")


def _plain_identifier(text: str) -> bool:
    """True for ids no rule can match: no space, ``=``, ``:`` (after a SPIFFE scheme), ``@``,
    JWT or by-reference prefix or 64-hex run, so neither a key=value, a credential nor an
    address."""
    if len(text) > 256:
        return False
    rest = text.removeprefix("spiffe://")
    if _PLAIN_ID.fullmatch(rest) is None or "eyJ" in rest or "tlr_" in rest:
        return False
    return len(rest) < 64 or HEX_SECRET.search(rest) is None


# Every control character (C0, DEL, C1), Unicode line break and bidi control but a tab
# (rules.controls).
_CONTROL_TO_SPACE = {c: " " for c in CONTROLS if c != 0x09}
_CONTROL = re.compile("[" + "".join(re.escape(chr(c)) for c in sorted(_CONTROL_TO_SPACE)) + "]")
MAX_DETAIL = 2048
_TRUNCATED = "[truncated]"
# The denial id a refusal's detail ends with (``core.kernel.with_denial``): set aside while
# the rest is redacted and cut to fit (no rule, and no cut, takes it with what precedes it).
_DENIAL_TAIL = re.compile(r"(?:^| \| )denial=den_[0-9a-f]{16}\Z")
_TAIL_ROOM = 33  # the longest denial tail


def _denial_tail(text: str) -> str:
    if "denial=den_" not in text[-_TAIL_ROOM:]:
        return ""
    found = _DENIAL_TAIL.search(text, max(0, len(text) - _TAIL_ROOM))
    return found.group() if found is not None else ""


def clipped(text: str, limit: int, *, breaks: str = "") -> str:
    """``text`` if at most ``limit`` characters, else its head marked ``[truncated]``, the
    whole ``limit`` characters at most (``limit`` must leave room for the marker).

    The head keeps no start of a secret the cut goes through (a token, address or secret
    cut short is not the shape :func:`sanitize` redacts): the word cut is dropped whole
    when it holds the mark of one (``eyJ``, ``@``, ``secret``...), before the cut or
    after, else its trailing hex digits are. Words end at whitespace, and at the
    characters of ``breaks`` (``/`` in a URL or path: no token or address holds one).
    """
    if len(text) <= limit:
        return text
    if limit < len(_TRUNCATED):
        raise ValueError(f"a limit of {limit} leaves no room for {_TRUNCATED}")
    return _head(text, limit - len(_TRUNCATED), breaks) + _TRUNCATED


_HEX_DIGITS = "0123456789abcdefABCDEF"


def _head(text: str, size: int, breaks: str = "") -> str:
    """The first ``size`` characters of ``text``, less any start of a secret cut there."""
    if size >= len(text) or text[size].isspace() or text[size] in breaks:
        return text[:size]
    start = size
    while start > 0 and not (text[start - 1].isspace() or text[start - 1] in breaks):
        start -= 1
    after = re.compile(rf"[\s{re.escape(breaks)}]").search(text, size)
    word = text[start : after.start() if after is not None else len(text)]
    # The whole word, the part after the cut too: an address cut before its "@".
    if _MARKER.search(word.lower()) is not None:
        return text[:start]
    return text[:start] + text[start:size].rstrip(_HEX_DIGITS)


def sanitize(detail: str) -> str:
    """Remove secrets and personal data from an audit detail.

    Redacts: JWTs and by-reference tokens, bearer/DPoP credentials, PEM blocks, values of
    secret-looking keys (``client_secret=...``, ``password: ...``), runs of 64 or more hex
    characters (launch tokens, nonces, secrets, whatever surrounds them: audit events name
    things by their id or hash prefix instead; ``rules.secretshapes``) and e-mail
    addresses (kept as ``a***@example.com``). Control characters (C0 but a tab, DEL, C1),
    Unicode line and paragraph separators and bidi controls become spaces
    (``rules.controls``: no reader takes them for a line break, no terminal for a
    command, no display reorders the text around them), text that is not
    valid Unicode (lone surrogates) is replaced, and the result is capped at
    :data:`MAX_DETAIL` characters, keeping the denial id a refusal's detail ends with.

    A longer text is cut to the cap *before* the rules run, so sanitizing any text costs
    at most what sanitizing :data:`MAX_DETAIL` characters does, and the cut keeps no start
    of a secret it goes through (as :func:`clipped`).
    """
    if not detail or _plain_identifier(detail):
        return detail  # the common case, kept cheap
    tail = _denial_tail(detail)
    out = detail[: len(detail) - len(tail)]
    room = MAX_DETAIL - len(tail)
    cut = len(out) > room
    if cut:
        out = _head(out, room - len(_TRUNCATED))
    # One scan decides whether any redaction rule can apply; most fields (ids, counts)
    # pass it untouched, which keeps sanitizing off the group commit's critical path.
    if _suspect(out):
        out = _PEM.sub("[REDACTED:pem]", out)
        out = JWT.sub(r"\g<1>[REDACTED:jwt]", out)
        out = REFERENCE.sub("[REDACTED:reference]", out)
        out = _BEARER.sub(lambda m: f"{m.group(1)} [REDACTED]", out)
        out = _SECRET_KV.sub(lambda m: f"{m.group(1)}{m.group(2)}***REDACTED***", out)
        out = HEX_SECRET.sub("[REDACTED:hex]", out)
        if "@" in out:
            out = _mask_emails(out)
    # isprintable() is false for every character mapped (and for a tab, which stays):
    # a tenth of the cost of the search on the text that has none, which is nearly all.
    if not out.isprintable() and _CONTROL.search(out) is not None:
        out = out.translate(_CONTROL_TO_SPACE)  # a search is ten times cheaper than this
    if not out.isascii():
        # A lone surrogate (valid in a Python str, not in UTF-8) would make the event
        # unencodable and fail every operation committed in the same batch.
        out = out.encode("utf-8", "replace").decode("utf-8")
    if cut or len(out) > room:
        # Redaction can lengthen a text (``password=x``): cut again, after the rules.
        out = out[: room - len(_TRUNCATED)] + _TRUNCATED
    out += tail
    return detail if out == detail else out


# --- fields -----------------------------------------------------------------------------
#
# A detail is the broker's words and ``key=value`` fields. A value written bare holds only
# visible ASCII but a space, ``"``, ``'``, backquote, backslash and ``=``: nothing a reader
# could take for the end of the value or the start of another field. Any other value (a
# name, a reason, a header: text a caller chose) is double-quoted, ``"`` and ``\`` escaped
# by a backslash, as logfmt and most key=value parsers read it.

_BARE = re.compile(r"[!#-&(-<>-\[\]-_a-~]+")
_OPEN_ENDINGS = frozenset("=:rRpP")  # the last character of an _OPEN_END match, or a space
_REDACTED = "***REDACTED***"
_QUOTE_ESCAPES = str.maketrans({'"': '\\"', "\\": "\\\\"})


def quoted(value: object) -> str:
    """``value`` as one field's value: itself when bare, else double-quoted with ``"`` and
    ``\\`` escaped. Its text is sanitized first, alone (:func:`sanitize`), so a secret or
    address in it is redacted within the quotes and no rule's match runs past them
    (taking the broker's fields after it); control characters become spaces there."""
    text = sanitize(str(value))
    # A text ending in a secret's key or in ``bearer`` would have the rules take the field
    # after it (its closing quote, written bare) for that secret: the key's value is
    # written redacted, and the word quoted.
    last = text[-1:]
    ending = _OPEN_END.search(text) if last in _OPEN_ENDINGS or last.isspace() else None
    if ending is not None and ending[1] is not None:
        text += _REDACTED
    if ending is None and _BARE.fullmatch(text) is not None:
        return text
    return '"' + text.translate(_QUOTE_ESCAPES) + '"'


def detail_field(key: str, value: object) -> str:
    """``key=value`` for an audit detail, the value as :func:`quoted` writes it. Every
    value that comes from outside the broker is written by this (one rule: none can add a
    field of its own, nor hide one of the broker's)."""
    return f"{key}={quoted(value)}"


# A refusal's reason is the broker's prose ("nonce expired", "wrong secret"), which may
# quote a caller's text (an evidence's kid, a repeated JSON member name, a peer's
# answer). It stays prose when, sanitized, it is visible ASCII and spaces without a
# double quote, backquote, backslash, ``=`` or ``|`` (nothing in it reads as a field, a
# quoted value or a separator), and no sanitizer rule runs from it into a field written
# after it (a reason ending in ``password:`` or ``DPoP``); any other reason is one
# quoted value, its redactions inside the quotes.
MAX_REASON = 512
_PROSE = re.compile(r"[ !#-<>-\[\]-_a-{}~]*")
_AFTER = " key=value0000"  # what a field after a reason looks like to the rules


def reason_text(text: object) -> str:
    """A refusal's free-text reason as a detail writes it: as it is when it is plain prose
    (see above), else as :func:`quoted` writes a value, so a caller's text it carries
    plants no field before the broker's and makes no rule erase a field after it. At most
    :data:`MAX_REASON` characters (:func:`clipped`), so a long one pushes none of the
    fields after it past the detail's cap. Every refusal writes its reason by this."""
    shown = clipped(str(text), MAX_REASON)
    clean = sanitize(shown)
    if _PROSE.fullmatch(clean) is not None and sanitize(shown + _AFTER) == clean + _AFTER:
        return shown
    return quoted(shown)


# A quoted string anywhere (skipped whole: a field inside one is a caller's text), or a
# field at the start or after a space: its value quoted, or bare up to a space, ",", "|"
# or quote (events written before values were quoted hold a caller's "," and "=").
_FIELD = re.compile(r'"(?:[^"\\]|\\.)*+"?|(?<!\S)([a-z_]+)=(?:"((?:[^"\\]|\\.)*+)"?|([^\s,|"]*))')
_UNESCAPE = re.compile(r"\\(.)")


def read_fields(detail: str) -> dict[str, str]:
    """The fields of ``detail`` (:func:`detail_field`), quoted values unescaped; the last one of
    a key written twice. A ``key=value`` inside a quoted value is no field."""
    found: dict[str, str] = {}
    for match in _FIELD.finditer(detail):
        if match[1] is not None:
            found[match[1]] = match[3] if match[2] is None else _UNESCAPE.sub(r"\1", match[2])
    return found


def sanitized_entry(entry: AuditEntry) -> AuditEntry:
    """Every free-text field of an entry, sanitized (identifiers can be pasted secrets too).

    Returns ``entry`` itself when sanitizing changes nothing (the common case).
    """
    detail = sanitize(entry.detail)
    agent_id = sanitize(entry.agent_id)
    task_id = sanitize(entry.task_id)
    orch_id = sanitize(entry.orch_id)
    resource = sanitize(entry.resource)
    request_id = sanitize(entry.request_id)
    app_id = sanitize(entry.app_id)
    principal_ref = sanitize(entry.principal_ref)
    chain_root = sanitize(entry.chain_root)
    if (
        detail is entry.detail
        and agent_id is entry.agent_id
        and task_id is entry.task_id
        and orch_id is entry.orch_id
        and resource is entry.resource
        and request_id is entry.request_id
        and app_id is entry.app_id
        and principal_ref is entry.principal_ref
        and chain_root is entry.chain_root
    ):
        return entry
    return AuditEntry(
        event_type=entry.event_type,
        outcome=entry.outcome,
        detail=detail,
        agent_id=agent_id,
        task_id=task_id,
        orch_id=orch_id,
        resource=resource,
        deleg_depth=entry.deleg_depth,
        deleg_chain_hash=entry.deleg_chain_hash,
        request_id=request_id,
        app_id=app_id,
        principal_ref=principal_ref,
        chain_root=chain_root,
    )


# --- hashing and verification -----------------------------------------------------------


# Compact JSON, UTF-8, no escaping beyond JSON's own: byte for byte what
# ``json.dumps(..., separators=(",", ":"), ensure_ascii=False).encode()`` gives for the
# ints and (sanitized, valid Unicode) strings of an event, at a tenth of the cost.
_ENCODER = msgspec.json.Encoder()


def _canonical(
    seq: int,
    timestamp: str,
    e: AuditEntry | AuditEvent,
    tenant: str,
    version: int,
) -> bytes:
    fields: list[object] = [
        seq,
        timestamp,
        e.event_type,
        e.agent_id,
        e.task_id,
        e.orch_id,
        e.detail,
        e.resource,
        e.outcome,
        e.deleg_depth,
        e.deleg_chain_hash,
        e.request_id,
    ]
    if version == 2:
        fields += (tenant, e.app_id, e.principal_ref, e.chain_root)
    elif version != 1:
        raise ValueError(f"unknown audit event format {version}")
    return _ENCODER.encode(fields)


def event_hash(
    prev_hash: str,
    seq: int,
    timestamp: str,
    entry: AuditEntry | AuditEvent,
    tenant: str | None = None,
    version: int | None = None,
) -> str:
    """The chain hash of one event (see :mod:`tasklease.rules.auditchain` for the bytes).

    A stored event is hashed in its own format and tenant unless told otherwise; a new
    entry in the current format, for ``tenant`` (by default the default tenant).
    """
    if isinstance(entry, AuditEvent):
        tenant = entry.tenant if tenant is None else tenant
        version = entry.version if version is None else version
    tenant = "default" if tenant is None else tenant
    version = CURRENT_FORMAT if version is None else version
    h = hashlib.sha256(_PREFIXES[version] if version in _PREFIXES else prefix(version))
    h.update(prev_hash.encode("ascii"))
    h.update(b"\n")
    h.update(_canonical(seq, timestamp, entry, tenant, version))
    return h.hexdigest()


def timestamp_seconds(timestamp: str) -> float:
    """Unix seconds of an event's RFC 3339 timestamp, which must carry an offset (``Z`` or
    ``±hh:mm``): the ``ts`` every store keeps beside the event for time filters.

    The hash does not cover ``ts``; the stores derive it with this function only, and
    ``tasklease audit verify --database`` checks it with this function, so the two can
    never disagree on an event nobody edited.
    """
    parsed = datetime.fromisoformat(timestamp)
    if parsed.tzinfo is None:
        raise ValueError(f"audit timestamp {timestamp!r} has no UTC offset")
    return parsed.timestamp()


def content_hash(ev: AuditEvent) -> str:
    """The hash of ``ev`` recomputed from its stored fields and its ``prev_hash``: what its
    chain hash and its Merkle leaf must be if nobody edited it.

    Raises:
        ValueError: it has none, and the message says why: a format v1 event that carries
            lineage its hash omits (edited), or an unknown format.
    """
    uncovered = uncovered_lineage(
        ev.version,
        {"app_id": ev.app_id, "principal_ref": ev.principal_ref, "chain_root": ev.chain_root},
    )
    if uncovered is not None:
        raise ValueError(f"format v1 event carries {uncovered}: edited")
    try:
        return event_hash(ev.prev_hash, ev.seq, ev.timestamp, ev)
    except ValueError:
        raise ValueError(f"unknown format v{ev.version}") from None


@dataclass(frozen=True, slots=True)
class ChainReport:
    ok: bool
    checked: int
    broken_at: str = ""  # event id of the first broken link
    reason: str = ""
    head_hash: str = GENESIS_HASH


def verify_chain(
    events: Iterable[AuditEvent],
    *,
    progress: Callable[[int], None] | None = None,
) -> ChainReport:
    """Walk events in ``seq`` order and report the first broken link.

    A link is broken when a sequence number is skipped or repeated, when ``prev_hash`` is
    not the previous event's hash, when an event's stored hash is not the hash of its
    own content (an edited row), or when an event is in an older format than one before
    it (formats only move forward).
    """
    prev = GENESIS_HASH
    expected_seq = 1
    checked = 0
    version = 1
    for ev in events:
        if ev.seq != expected_seq:
            return ChainReport(
                False,
                checked,
                ev.id,
                f"sequence gap: expected {expected_seq}, found {ev.seq}",
                prev,
            )
        if ev.prev_hash != prev:
            return ChainReport(
                False, checked, ev.id, "prev_hash does not match the previous event", prev
            )
        if ev.version < version:
            return ChainReport(
                False, checked, ev.id, f"format v{ev.version} after format v{version}", prev
            )
        version = ev.version
        try:
            digest = content_hash(ev)
        except ValueError as exc:
            return ChainReport(False, checked, ev.id, str(exc), prev)
        if digest != ev.hash:
            return ChainReport(False, checked, ev.id, "event content does not match its hash", prev)
        prev = ev.hash
        expected_seq += 1
        checked += 1
        if progress is not None and checked % 10000 == 0:
            progress(checked)
    return ChainReport(True, checked, head_hash=prev)
