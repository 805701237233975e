"""What every area of the HTTP contract shares: the two kinds of body, the helpers that
document a field, and the route table's vocabulary (who may call, how it fails).

No string of a request may hold a control character (C0, DEL, C1): the HTTP edge refuses
it with 400 before any route decodes the body, except line breaks in the fields declared
:func:`multiline` (PEM). None of our identifiers or texts needs one, and NUL cannot even
be stored in PostgreSQL's text.

A :class:`Request` decodes every field as optional, so that a missing field reaches the
core, which answers ``missing required field: <name>`` (400) rather than a generic
decoding error; the fields the core requires are marked with :func:`required` for the
document. Wrong JSON types are refused at decoding with the offending field's path, and
unknown fields are ignored, as AgentWrit v2 does.

A :class:`Response` is encoded, never decoded: every field is always sent, except those
whose default is ``msgspec.UNSET`` (sent only when set).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

import msgspec

__all__ = [
    "ADMIN_OR_APP_TOKEN",
    "AGENT_TOKEN",
    "ANY_TOKEN",
    "PEER_TOKEN",
    "PUBLIC",
    "REF",
    "AccessToken",
    "Auth",
    "Body",
    "ExpiresIn",
    "Failure",
    "OneOf",
    "Operation",
    "Param",
    "Request",
    "Response",
    "Timestamp",
    "TokenType",
    "admin",
    "app",
    "constant",
    "doc",
    "multiline",
    "required",
    "shaped_as",
]

REF = "#/components/schemas/{name}"
"""Where the document keeps a named schema."""


class Request(msgspec.Struct):
    """Base of request bodies (see the module docstring)."""


class Response(msgspec.Struct, forbid_unknown_fields=True):
    """Base of response bodies: the document says no other field is sent."""


# --- documenting fields ------------------------------------------------------------------


def doc(description: str, **schema: Any) -> msgspec.Meta:
    """A field's description, and any further JSON Schema keywords it needs
    (``enum``, ``format``, ``const``...), for the document only: nothing is checked."""
    return msgspec.Meta(description=description, extra_json_schema=schema or None)


def constant(value: object) -> msgspec.Meta:
    """A field that always holds ``value`` in this shape (``valid: true``, ...)."""
    return msgspec.Meta(extra_json_schema={"const": value})


def required(description: str) -> msgspec.Meta:
    """A request field the core requires (it answers 400 when the field is absent)."""
    return msgspec.Meta(description=description, extra={"required": True})


def multiline(description: str) -> msgspec.Meta:
    """A request field whose format has lines (PEM): the one place line breaks (LF, CR)
    are accepted. Every other control character is refused in every field."""
    return msgspec.Meta(description=description, extra={"multiline": True})


def shaped_as(struct: type[msgspec.Struct], description: str) -> msgspec.Meta:
    """A field passed through as a mapping (a token's claims as signed) whose shape the
    document takes from ``struct``: copying into a Struct would cost time on a hot path."""
    return msgspec.Meta(
        description=description, extra_json_schema={"$ref": REF.format(name=struct.__name__)}
    )


AccessToken = Annotated[
    str,
    doc(
        "The access token: a compact EdDSA JWS, or an opaque by-reference token (`tlr_` and "
        "43 base64url characters) when the JWS would exceed 4 KB; send either the same way."
    ),
]
ExpiresIn = Annotated[int, doc("Seconds until the token expires.")]
TokenType = Annotated[
    str,
    doc(
        "`DPoP` when the token is bound to a DPoP key (RFC 9449 section 5: the "
        "registration carried a DPoP proof; send the token as `Authorization: DPoP <token>` "
        "with a fresh proof); otherwise `Bearer`.",
        enum=["Bearer", "DPoP"],
    ),
]
Timestamp = Annotated[str, doc("RFC 3339, UTC.", format="date-time")]


# --- the route table's vocabulary -----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Auth:
    """Who may call a route: the kind of bearer token and its scope; ``kind`` is ``""``
    for public routes."""

    kind: str  # "", "any", "agent", "admin", "app", "admin-or-app" or "agent-or-app"
    scope: str | None = None
    # The error code an agent-only route answers an admin or app token with.
    refusal: str = "forbidden"

    @property
    def description(self) -> str:
        if not self.kind:
            return "None (public)."
        if self.kind == "any":
            return "Bearer token: any token the broker issued (agent, admin or app)."
        if self.kind == "agent":
            return f"Bearer agent token (admin and app tokens are refused with `{self.refusal}`)."
        if self.kind == "agent-or-app":
            return (
                "Bearer agent token (or an offline chain as `DPoP`), or app token (admin "
                "tokens are refused with `insufficient_scope`)."
            )
        if self.kind == "admin-or-app":
            return (
                "Bearer app token, or an operator's token with `admin:revoke:*` (agent "
                "tokens and an auditor's are refused)."
            )
        return f"Bearer {self.kind} token with scope `{self.scope}`."


PUBLIC = Auth("")
ANY_TOKEN = Auth("any")
AGENT_TOKEN = Auth("agent")
# The agent-trust routes admit only agent tokens when they authenticate, so another kind
# is refused as any wrong-kind token is.
PEER_TOKEN = Auth("agent", refusal="insufficient_scope")
ADMIN_OR_APP_TOKEN = Auth("admin-or-app")


def admin(scope: str) -> Auth:
    return Auth("admin", scope)


def app(scope: str) -> Auth:
    return Auth("app", scope)


@dataclass(frozen=True, slots=True)
class Failure:
    """One way a route can fail: an error code and when it happens."""

    code: str
    when: str


@dataclass(frozen=True, slots=True)
class Param:
    """A path or query parameter."""

    name: str
    location: str  # "path" or "query"
    schema: dict[str, Any]
    description: str
    required: bool = False


@dataclass(frozen=True, slots=True)
class OneOf:
    """A JSON body that is exactly one of several shapes, named for the document."""

    name: str
    shapes: tuple[type[Response], ...]


@dataclass(frozen=True, slots=True)
class Body:
    """A body that is not a JSON object we encode: text, a stream, or a document."""

    name: str
    media: str
    schema: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Operation:
    """One route: how it is called, what it answers, and how it fails.

    The failures every route of its kind shares (a malformed body, a bad token, a write
    that could not be made durable...) are added by the document's builder from
    ``request``, ``auth``, ``commits`` and ``sign_in_limit``; ``errors`` lists the rest.
    """

    route: str  # "METHOD /path"
    operation_id: str
    tag: str
    summary: str
    description: str
    auth: Auth
    response: type[Response] | OneOf | Body | None  # None: no body
    status: int = 200
    request: type[Request] | None = None
    parameters: tuple[Param, ...] = ()
    errors: tuple[Failure, ...] = ()
    commits: bool = False  # writes state and an audit event: can fail closed with 503
    # The sign-in limit the route spends (``"admin"`` or ``"app"``: Broker.admit_sign_in).
    sign_in_limit: str = ""
    # The body may also be a form (application/x-www-form-urlencoded, as OAuth endpoints
    # take them, RFC 6749 section 3.2) with the request Struct's field names.
    form: bool = False

    @property
    def method(self) -> str:
        return self.route.split(" ", 1)[0]

    @property
    def path(self) -> str:
        return self.route.split(" ", 1)[1]
