"""The Bitrix24 client's errors: one root, split by what the caller can do about them.

Exception tree::

    BitrixError
    ├── PortalError            the portal answered the whole request with an error
    │                          envelope (code, description, HTTP status): limits,
    │                          auth, rights, server faults, or a single call's failure
    ├── UnexpectedAnswerError  an answer that is not a Bitrix24 envelope (HTML, not
    │                          JSON, another shape); the request may have been applied
    ├── NoAnswerError          no answer at all (timeout, connection error);
    │                          ``maybe_sent`` is False only when the request certainly
    │                          never reached the portal
    └── TokenRenewalError      OAuth: the token endpoint refused the refresh token, or
                               the rotated token could not be read or persisted

A failure of one command inside a batch is not an exception: it is a
``CommandError`` in that command's ``CommandAnswer``.

No message carries a webhook code, a token or a client secret: URLs appear
redacted (``https://host/rest/1/***/``) and httpx's own exception text, which
holds the full URL, is never copied nor chained.
"""

from __future__ import annotations

__all__ = [
    "BitrixError",
    "NoAnswerError",
    "PortalError",
    "TokenRenewalError",
    "UnexpectedAnswerError",
]


class BitrixError(Exception):
    """Root of every error the Bitrix24 client raises."""


class PortalError(BitrixError):
    """An error envelope ``{"error", "error_description"}`` answering the whole request."""

    def __init__(self, *, method: str, code: str, description: str, status: int) -> None:
        shown = code or "(empty code)"
        super().__init__(f"{method}: {shown} {description!r} (HTTP {status})")
        self.method = method
        self.code = code
        self.description = description
        self.status = status


class UnexpectedAnswerError(BitrixError):
    """The portal (or something in front of it) answered, but not with a Bitrix24 envelope."""

    def __init__(self, *, method: str, status: int, reason: str) -> None:
        super().__init__(f"{method}: unexpected answer (HTTP {status}): {reason}")
        self.method = method
        self.status = status
        self.reason = reason


class NoAnswerError(BitrixError):
    """No answer: a timeout or a connection error.

    ``maybe_sent`` is False only for failures before the request left this
    process (no connection could be made, or none was free in the pool); a
    read timeout or a dropped connection may follow a request the portal
    applied. ``out_of_files``: no connection could be made because this
    process (or the system) had no file descriptor left; about the worker, not
    the portal, and never sent.
    """

    def __init__(
        self,
        *,
        method: str,
        kind: str,
        where: str,
        maybe_sent: bool,
        out_of_files: bool = False,
    ) -> None:
        sent = "may have been sent" if maybe_sent else "was not sent"
        super().__init__(f"{method}: {kind} talking to {where}; the request {sent}")
        self.method = method
        self.kind = kind
        self.maybe_sent = maybe_sent
        self.out_of_files = out_of_files


class TokenRenewalError(BitrixError):
    """OAuth access cannot be renewed without an operator (or the token store failed)."""
