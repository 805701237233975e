"""The exceptions the agent SDK and the verifier share, defined once.

``tasklease.client`` and ``tasklease.verify`` are separate trees (``TaskleaseError``,
``VerificationError``) and neither package imports the other, but one refusal is both:
a valid token without the scope it needs. :class:`InsufficientScope` is that one class,
exported by both packages under the same name (``tasklease.client.InsufficientScope is
tasklease.verify.InsufficientScope``), so a program that uses both catches the broker's
refusal and the verifier's with either name. The roots it stands under live here with
it; each package re-exports its own (and shows them as its own: ``__module__``).

Standard library only.
"""

from __future__ import annotations

__all__ = ["Forbidden", "InsufficientScope", "TaskleaseError", "VerificationError"]


class TaskleaseError(Exception):
    """Root of every error the SDK raises.

    Attributes:
        code: the broker's ``error_code`` (for example ``"scope_violation"``), or a
            client-side code such as ``"transport_error"``.
        status: the HTTP status, or None when the broker gave no answer.
        detail: the problem's ``detail``, safe to show.
        hint: the problem's ``hint``, when the broker gave advice.
        request_id: the broker's ``request_id`` (``X-Request-ID``), for its logs.
        denial_id: the broker's ``denial_id`` of an audited refusal: the audit event
            holding the precise reason.
        oauth_error: the RFC 6749 section 5.2 ``error`` (``invalid_client``...), if any.
    """

    __module__ = "tasklease.client"

    code = "internal_error"
    default_detail = "request failed"

    def __init__(
        self,
        detail: str | None = None,
        *,
        code: str | None = None,
        status: int | None = None,
        hint: str | None = None,
        request_id: str | None = None,
        denial_id: str | None = None,
        oauth_error: str | None = None,
    ) -> None:
        self.detail = detail if detail is not None else self.default_detail
        if code is not None:
            self.code = code
        self.status = status
        self.hint = hint
        self.request_id = request_id
        self.denial_id = denial_id
        self.oauth_error = oauth_error
        # Not super(): under InsufficientScope the next class is VerificationError,
        # whose message is not this detail.
        Exception.__init__(self, self.detail)

    def __repr__(self) -> str:
        """The class, ``code``, ``status`` and ``detail``, and the ``denial_id`` and
        ``request_id`` that lead to the broker's audit event and log lines, when given."""
        name = type(self).__name__
        ids = "".join(
            f", {label}={value!r}"
            for label, value in (("denial_id", self.denial_id), ("request_id", self.request_id))
            if value is not None
        )
        return f"{name}(code={self.code!r}, status={self.status}, detail={self.detail!r}{ids})"


class Forbidden(TaskleaseError):
    """Authenticated, but not allowed (``forbidden``, 403): an app or operator role
    without the right, an agent revoked or released, a resumption switched off."""

    __module__ = "tasklease.client"

    code = "forbidden"


class VerificationError(Exception):
    """Root of every refusal. ``reason`` is internal: never send it to the caller."""

    __module__ = "tasklease.verify"

    code = "unauthorized"
    message = "token verification failed"

    def __init__(self, reason: str) -> None:
        super().__init__(self.message)
        self.reason = reason

    def __repr__(self) -> str:
        return f"{type(self).__name__}(reason={self.reason!r})"


class InsufficientScope(Forbidden, VerificationError):
    """A valid token without the scope it needs (``insufficient_scope``, 403). One class
    for the SDK and the verifier: a ``Forbidden`` (``TaskleaseError``) and a
    ``VerificationError`` both, caught by either import path's name.

    From the SDK, the broker refused a call for it: ``detail`` (and ``str()``) is the
    broker's, with ``status``, ``denial_id`` and ``request_id`` as on every
    ``TaskleaseError``. From the verifier, a token lacks the scope (grant, attested fact)
    a route needs: ``str()``, ``detail`` and ``message`` are generic, safe to send;
    ``reason`` is for logs only; ``required`` is what was lacking (``""`` when not one
    scope), ``status`` None. The first argument is the internal ``reason``; the broker's
    ``detail`` is given by name.
    """

    __module__ = "tasklease.client"

    code = "insufficient_scope"
    message = "token lacks the required scope"
    default_detail = message

    def __init__(
        self,
        reason: str | None = None,
        required: str = "",
        *,
        detail: str | None = None,
        code: str | None = None,
        status: int | None = None,
        hint: str | None = None,
        request_id: str | None = None,
        denial_id: str | None = None,
        oauth_error: str | None = None,
    ) -> None:
        TaskleaseError.__init__(
            self,
            detail,
            code=code,
            status=status,
            hint=hint,
            request_id=request_id,
            denial_id=denial_id,
            oauth_error=oauth_error,
        )
        self.reason = reason if reason is not None else self.detail
        self.required = required

    def __repr__(self) -> str:
        """As a ``TaskleaseError``'s, with the internal ``reason`` and the scope
        ``required`` (for logs, as a ``VerificationError``'s)."""
        shown = TaskleaseError.__repr__(self)[:-1]
        return f"{shown}, reason={self.reason!r}, required={self.required!r})"
