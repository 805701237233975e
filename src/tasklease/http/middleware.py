"""The envelope every response gets, and the trusted-proxy rewrite, as pure-ASGI middleware.

:class:`EnvelopeMiddleware`:

- ``X-Request-ID``: echoed when the caller sent a sane one (at most 128 characters of
  ``[A-Za-z0-9._:-]``, not shaped like one of our credentials), otherwise 16 random hex
  characters; stored in the ASGI scope.
- Security headers on every response, 413s included; ``Cache-Control: no-store`` and
  ``Pragma: no-cache`` unless the handler set a cache policy of its own.
- Body limit: the body is read eagerly through a cap (1 MiB by default); a larger body,
  declared or streamed, gets a 413 problem before any route runs.
- Nesting limit: a body that is not a form and nests deeper than :data:`MAX_JSON_DEPTH`
  arrays or objects gets a 400 problem before any route decodes it (a decoder recursing
  a thousand levels runs out of stack: that was a 500 for a 2 KB unauthenticated body).
- Control characters: a path, query string, form or JSON string holding one (C0, DEL,
  C1; line breaks only in the JSON fields named ``multiline``, PEM) gets a 400 problem
  before any route runs (:func:`control_character_error`). No identifier or text of ours
  needs one, and a NUL reaching PostgreSQL failed as a storage error.

:class:`TrustedProxyMiddleware`: ``X-Forwarded-For`` and ``X-Forwarded-Proto`` are
believed only from a peer in ``trusted_proxies``; from anyone else they are ignored.
"""

from __future__ import annotations

import ipaddress
import re
import secrets
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from typing import TYPE_CHECKING, Any

import msgspec

from tasklease.http.problems import problem_body, status_for
from tasklease.rules.jsonnames import MAX_JSON_DEPTH, json_nesting_error

if TYPE_CHECKING:
    from tasklease.core.config import Config

__all__ = [
    "MAX_JSON_DEPTH",
    "EnvelopeMiddleware",
    "TrustedProxyMiddleware",
    "control_character_error",
    "envelope_headers",
    "is_form",
    "json_nesting_error",
    "security_headers",
]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

_SAFE_ID = re.compile(rb"[A-Za-z0-9._:-]{1,128}")
# A request id holding anything shaped like a credential, anywhere in it (a run of 40 hex
# characters or more: our secrets and launch tokens; the start of a JWT; a by-reference
# token's prefix), is replaced: the id goes into the access log, traces and audit events,
# and a credential pasted there by mistake must reach none of them (TM-29). Stricter than
# what the audit log redacts (rules.secretshapes): an id needs none of these.
_CREDENTIAL_SHAPED = re.compile(rb"[0-9a-fA-F]{40,}|eyJ|tlr_")
_BASE_HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"cache-control", b"no-store"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"content-security-policy", b"default-src 'none'; frame-ancestors 'none'"),
]
# With the envelope's ``no-store``, never beside a handler's own policy: RFC 6749 section
# 5.1 wants both on any answer holding tokens, credentials or other sensitive information.
_PRAGMA = (b"pragma", b"no-cache")
_HSTS = (b"strict-transport-security", b"max-age=63072000; includeSubDomains")


def security_headers(config: Config) -> tuple[tuple[bytes, bytes], ...]:
    """The security headers every answer carries: the envelope's, and the server's own
    answers before any route (``http.protocol``); with HSTS when ``config`` serves TLS."""
    return (*_BASE_HEADERS, _HSTS) if config.tls_mode != "none" else tuple(_BASE_HEADERS)


def envelope_headers(config: Config) -> tuple[tuple[bytes, bytes], ...]:
    """What every answer without a cache policy of its own carries (but ``X-Request-ID``):
    also what the server's own answers, before any route, carry."""
    return (*security_headers(config), _PRAGMA)


_FORM = "application/x-www-form-urlencoded"

# C0 controls, DEL and C1 controls, as text and as UTF-8 bytes; and the same but for the
# line breaks (LF, CR) of multi-line fields.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")
_CONTROL_BUT_LINES = re.compile("[\x00-\x09\x0b\x0c\x0e-\x1f\x7f-\x9f]")
_CONTROL_BYTES = re.compile(rb"[\x00-\x1f\x7f]|\xc2[\x80-\x9f]")
# The same in percent-encoded text, without decoding it (a megabyte of escapes took
# ``unquote_to_bytes`` 100 ms): a raw or escaped C0 or DEL byte, or the two bytes of a
# C1 character's UTF-8 (0xC2, then 0x80-0x9F), each raw or escaped.
_C2 = rb"(?:\xc2|%[cC]2)"
_C1_SECOND = rb"(?:[\x80-\x9f]|%[89][0-9a-fA-F])"
_ENCODED_CONTROL = re.compile(rb"[\x00-\x1f\x7f]|%[01][0-9a-fA-F]|%7[fF]|" + _C2 + _C1_SECOND)


_PRINTABLE_ASCII = bytes(range(0x20, 0x7F))


def _encoded_control(text: bytes) -> bool:
    """True when percent-encoded ``text`` holds a control character, raw or escaped
    (:data:`_ENCODED_CONTROL`). Printable ASCII without a ``%``, nearly every query string
    and form body, is passed by byte operations: the pattern needs a ``%``, a byte below
    0x20, DEL or a byte past ASCII to match."""
    if text.isascii() and b"%" not in text and not text.translate(None, _PRINTABLE_ASCII):
        return False
    return _ENCODED_CONTROL.search(text) is not None


def is_form(content_type: str | bytes | None) -> bool:
    """Whether a ``Content-Type`` value names a form (``application/x-www-form-urlencoded``):
    its media type, before any parameter, without case and without the optional white
    space (space, tab) around it (RFC 9110 sections 5.6.3 and 8.3.1).

    The one rule for it: the edge judges a body's control characters as a form's (their
    percent-escapes) or as JSON by it, and every route that decodes a form reads one only
    when this says so. A reader that stripped more (Python's ``str.strip`` also takes a
    trailing NBSP or NEL) decoded as a form what the edge had judged as JSON, its escaped
    control characters unseen.
    """
    if content_type is None:
        return False
    if isinstance(content_type, bytes):
        content_type = content_type.decode("latin-1")
    return content_type.split(";", 1)[0].strip(" \t").lower() == _FORM


def _named(character: str) -> str:
    return f"U+{ord(character):04X}"


# What can put a control character into a JSON string: an escape of one (``\b \f \n \r
# \t``, ``\u0000``-``\u001f``, ``\u007f``, ``\u0080``-``\u009f``: a backslash that is
# not itself escaped, an odd one in its run), a raw DEL, a raw C1 (UTF-8 0xC2 0x80-0x9F).
# Raw C0 bytes are invalid JSON.
_JSON_CONTROL = re.compile(
    rb"(?<!\\)(?:\\\\)*\\(?:[bfnrt]|u00(?:[01][0-9a-fA-F]|7[fF]|[89][0-9a-fA-F]))"
    rb"|\x7f|\xc2[\x80-\x9f]"
)


# How many values (strings, numbers, lists, objects...) a body that may hold a control
# character is walked through at most; past it the body is refused. No body of the API
# comes near it, and a crafted one of a million values cost 150 ms of the event loop.
MAX_WALKED_VALUES = 20_000


class _TooMany(Exception):
    pass


def _json_control_error(body: bytes, multiline: frozenset[str]) -> str | None:
    """The first JSON string of ``body`` holding a control character, described.

    A body whose bytes can put no control character into a string (:data:`_JSON_CONTROL`),
    nearly every body, is passed by one byte search; the others are decoded and walked,
    through :data:`MAX_WALKED_VALUES` values at most. The walk builds no description until
    it finds a string.
    """
    # Nearly every body holds no backslash, DEL or 0xC2 at all: three byte searches pass
    # it, where the pattern (a look-behind at every byte) cost a validation about a fifth
    # of its CPU. The pattern needs one of the three to match.
    if b"\\" not in body and b"\x7f" not in body and b"\xc2" not in body:
        return None
    if _JSON_CONTROL.search(body) is None:
        return None
    try:
        document = msgspec.json.decode(body)
    except (msgspec.DecodeError, RecursionError):
        return None  # not JSON: the route's decoder answers that
    budget = MAX_WALKED_VALUES

    def walk(node: Any, lines: bool) -> tuple[str, list[str | int]] | None:
        """(what was found, the path to it, innermost first) or None."""
        nonlocal budget
        budget -= 1
        if budget < 0:
            raise _TooMany
        if isinstance(node, str):
            found = (_CONTROL_BUT_LINES if lines else _CONTROL).search(node)
            return None if found is None else (found.group(), [])
        if isinstance(node, dict):
            for key, value in node.items():
                found = _CONTROL.search(key)
                if found is not None:
                    return found.group(), [""]
                problem = walk(value, key in multiline)
                if problem is not None:
                    problem[1].append(key)
                    return problem
        elif isinstance(node, list):
            for index, value in enumerate(node):
                problem = walk(value, lines)
                if problem is not None:
                    problem[1].append(index)
                    return problem
        return None

    try:
        problem = walk(document, False)
    except _TooMany:
        return f"the body holds more than {MAX_WALKED_VALUES} values and an escape"
    if problem is None:
        return None
    character, path = problem
    if path and path[0] == "":
        return f"a field name holds a control character ({_named(character)})"
    where = "the body"
    for step in reversed(path):
        where = f"`{step}`" if isinstance(step, str) else f"{where}[{step}]"
    return f"{where} holds a control character ({_named(character)})"


def control_character_error(
    path: str, query: bytes, body: bytes, *, form: bool, multiline: frozenset[str] = frozenset()
) -> str | None:
    """Why a request must be refused for a control character, or ``None``.

    Refused: a C0 control (U+0000-U+001F: NUL, TAB, LF, CR and the rest), DEL (U+007F) or
    a C1 control (U+0080-U+009F) anywhere in the path or the query string (percent-decoded),
    in a form body, or in a string of a JSON body; a JSON field named in ``multiline`` may
    hold line breaks (LF, CR), for PEM. ``path`` is the percent-decoded path.
    """
    found = _CONTROL.search(path)
    if found is not None:
        return f"the request path holds a control character ({_named(found.group())})"
    if query and _encoded_control(query):
        return "the query string holds a control character"
    if not body:
        return None
    if form and _encoded_control(body):
        return "the form body holds a control character"
    # A body labelled as a form may be JSON all the same (the JSON routes decode whatever
    # the label says): its strings are checked too. Text that is not JSON passes here.
    return _json_control_error(body, multiline)


class EnvelopeMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        *,
        max_body: int,
        config: Config,
        multiline: frozenset[str] = frozenset(),
    ) -> None:
        self.app = app
        self.max_body = max_body
        self.headers = list(security_headers(config))
        self.multiline = multiline

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = b""
        declared = -1
        form = False
        content_types = 0
        authorizations = 0
        for name, value in scope["headers"]:
            if name == b"x-request-id":
                request_id = value
            elif name == b"content-length" and value.isdigit():
                declared = int(value)
            elif name == b"content-type":
                content_types += 1
                form = is_form(value)
            elif name == b"authorization":
                authorizations += 1
        if not _SAFE_ID.fullmatch(request_id) or _CREDENTIAL_SHAPED.search(request_id):
            request_id = secrets.token_hex(8).encode()
        rid = request_id.decode()
        scope.setdefault("state", {})["request_id"] = rid
        extra = [*self.headers, (b"x-request-id", request_id)]

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                present = {name.lower() for name, _ in headers}
                # A handler may set its own policy (the JWKS is cacheable); keep it.
                headers.extend(h for h in extra if h[0] not in present)
                if b"cache-control" not in present and b"pragma" not in present:
                    headers.append(_PRAGMA)
                message["headers"] = headers
            await send(message)

        if declared > self.max_body:
            await self._too_large(scope, send_with_headers, rid)
            return
        chunks: list[bytes] = []
        size = 0
        more = True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body:
                await self._too_large(scope, send_with_headers, rid)
                return
            chunks.append(chunk)
            more = message.get("more_body", False)
        body = b"".join(chunks)
        if content_types > 1:
            # A singleton field (RFC 9110 section 8.3): this check would judge the body by
            # one value and a route decode it by another (Starlette reads the first), so a
            # form could pass as JSON, its percent-escaped control characters unseen.
            detail = "Content-Type must be given once"
            await self._problem(scope, send_with_headers, rid, "invalid_request", detail)
            return
        if authorizations > 1:
            # A singleton field too (RFC 9110 section 11.6.2; RFC 6749 section 2.3: one
            # authentication method a request): a route reads the first, a proxy or a log
            # may read the last, and the two would name different callers.
            detail = "Authorization must be given once"
            await self._problem(scope, send_with_headers, rid, "invalid_request", detail)
            return
        if body and not form:
            # Every route but the token routes' form bodies decodes JSON, whatever the
            # Content-Type says; refuse here what no decoder should be handed.
            nested = json_nesting_error(body)
            if nested is not None:
                await self._problem(scope, send_with_headers, rid, "invalid_request", nested)
                return
        control = control_character_error(
            scope.get("path", ""),
            scope.get("query_string", b""),
            body,
            form=form,
            multiline=self.multiline,
        )
        if control is not None:
            detail = f"{control}: control characters are not accepted"
            await self._problem(scope, send_with_headers, rid, "invalid_request", detail)
            return
        delivered = False

        async def replay() -> Message:
            nonlocal delivered
            if not delivered:
                delivered = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send_with_headers)

    async def _too_large(self, scope: Scope, send: Send, rid: str) -> None:
        detail = f"request body must not exceed {self.max_body} bytes"
        await self._problem(scope, send, rid, "payload_too_large", detail, close=True)

    @staticmethod
    async def _problem(
        scope: Scope, send: Send, rid: str, code: str, detail: str, *, close: bool = False
    ) -> None:
        body = problem_body(code, detail, instance=scope.get("path", ""), request_id=rid)
        headers = [
            (b"content-type", b"application/problem+json"),
            (b"content-length", str(len(body)).encode()),
        ]
        if close:  # the rest of an oversized body is not read
            headers.append((b"connection", b"close"))
        await send(
            {
                "type": "http.response.start",
                "status": status_for(code),
                "headers": headers,
            }
        )
        await send({"type": "http.response.body", "body": body})


_Address = ipaddress.IPv4Address | ipaddress.IPv6Address
_SCHEMES = {"http": ("http", "ws"), "https": ("https", "wss")}


def _address(text: str) -> _Address | None:
    """An IP address, also as ``[v6]:port`` or ``v4:port`` (some proxies add the port)."""
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        pass
    host, port = "", ""
    if text.startswith("["):
        host, _, port = text[1:].partition("]:")
    elif text.count(":") == 1:
        host, _, port = text.partition(":")
    if not port.isdigit():
        return None
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


class TrustedProxyMiddleware:
    """Take the client address and scheme from a trusted proxy's headers.

    Only when the TCP peer is in ``trusted`` (addresses or CIDR networks): the client is
    the right-most ``X-Forwarded-For`` address that is not itself a trusted proxy. Each
    proxy appends the peer it saw, so that is the address the outermost trusted proxy saw;
    everything left of it was written by the client and proves nothing. The scheme is the
    last ``X-Forwarded-Proto`` value when it is ``http`` or ``https``. From any other peer
    both headers are ignored: the client is the peer, the scheme the connection's.
    """

    def __init__(self, app: ASGIApp, *, trusted: Iterable[str]) -> None:
        self.app = app
        self.networks = tuple(ipaddress.ip_network(entry, strict=False) for entry in trusted)

    def _trusts(self, address: _Address) -> bool:
        mapped = getattr(address, "ipv4_mapped", None)  # a v4 peer on a dual-stack socket
        return any(
            address in net or (mapped is not None and mapped in net) for net in self.networks
        )

    def client_address(self, forwarded_for: str) -> str | None:
        """The client named by an ``X-Forwarded-For`` value, or ``None`` (keep the peer).

        A value that is not an address stops the walk at the last trusted hop.
        """
        nearest_trusted: str | None = None
        for entry in reversed(forwarded_for.split(",")):
            address = _address(entry.strip())
            if address is None:
                return nearest_trusted
            if not self._trusts(address):
                return str(address)
            nearest_trusted = str(address)
        return nearest_trusted

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket"):
            peer = scope.get("client")
            address = _address(peer[0]) if peer else None
            if address is not None and self._trusts(address):
                self._rewrite(scope)
        await self.app(scope, receive, send)

    def _rewrite(self, scope: Scope) -> None:
        forwarded_for: list[bytes] = []
        proto = b""
        for name, value in scope["headers"]:
            if name == b"x-forwarded-for":
                forwarded_for.append(value)
            elif name == b"x-forwarded-proto":
                proto = value
        if forwarded_for:
            client = self.client_address(b",".join(forwarded_for).decode("latin-1"))
            if client is not None:
                scope["client"] = (client, 0)
        scheme = proto.decode("latin-1").rsplit(",", 1)[-1].strip().lower()
        if scheme in _SCHEMES:
            scope["scheme"] = _SCHEMES[scheme][scope["type"] == "websocket"]
