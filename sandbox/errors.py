"""The portal's error catalogue, and the one exception that carries an entry of it.

Every error the sandbox answers with comes from ``CATALOGUE``, keyed by a name.
The name is the wire code except where one code has two meanings
(``ACCESS_DENIED`` is 400 for item rights and 403 for a free plan) or no text
at all (the stage-move refusal is sent with an empty code).

Exception tree::

    RestError            a catalogue entry, optionally with its own description
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["CATALOGUE", "ErrorEntry", "RestError", "entry"]


@dataclass(frozen=True, slots=True)
class ErrorEntry:
    """One row of the catalogue: what goes on the wire and with which HTTP status."""

    code: str
    status: int
    description: str


def _e(code: str, status: int, description: str) -> ErrorEntry:
    return ErrorEntry(code=code, status=status, description=description)


CATALOGUE: dict[str, ErrorEntry] = {
    # crm.item.* errors
    "NOT_FOUND": _e("NOT_FOUND", 400, "Item was not found."),
    "TYPE_NOT_FOUND": _e("NOT_FOUND", 400, "Smart Process Automation was not found"),
    "ACCESS_DENIED": _e("ACCESS_DENIED", 400, "Access denied"),
    "allowed_only_intranet_user": _e(
        "allowed_only_intranet_user", 403, "Action is allowed only for intranet users"
    ),
    "CRM_FIELD_ERROR_VALUE_NOT_VALID": _e(
        "CRM_FIELD_ERROR_VALUE_NOT_VALID", 400, 'Invalid value for field "{field}"'
    ),
    "CRM_FIELD_ERROR_REQUIRED": _e("CRM_FIELD_ERROR_REQUIRED", 400, 'Field "{field}" is required'),
    "100": _e("100", 400, "Could not find value for parameter {param}"),
    "STAGE_FORBIDDEN": _e("", 400, "Insufficient rights to change the stage"),
    "UPDATE_DYNAMIC_ITEM_RESTRICTED": _e(
        "UPDATE_DYNAMIC_ITEM_RESTRICTED",
        400,
        "You cannot change the item due to your plan's restrictions",
    ),
    # errors any method can get
    "INTERNAL_SERVER_ERROR": _e("INTERNAL_SERVER_ERROR", 500, "Internal server error"),
    "ERROR_UNEXPECTED_ANSWER": _e(
        "ERROR_UNEXPECTED_ANSWER", 500, "Server returned an unexpected response"
    ),
    "PORTAL_DELETED": _e("PORTAL_DELETED", 500, "Portal was deleted"),
    "QUERY_LIMIT_EXCEEDED": _e("QUERY_LIMIT_EXCEEDED", 503, "Too many requests"),
    "OVERLOAD_LIMIT": _e("OVERLOAD_LIMIT", 503, "REST API is blocked due to overload"),
    "OPERATION_TIME_LIMIT": _e(
        "OPERATION_TIME_LIMIT", 429, "Method is blocked due to operation time limit."
    ),
    "NO_AUTH_FOUND": _e("NO_AUTH_FOUND", 401, "Wrong authorization data"),
    "expired_token": _e("expired_token", 401, "The access token provided has expired"),
    "INVALID_CREDENTIALS": _e("INVALID_CREDENTIALS", 403, "Invalid request credentials"),
    "insufficient_scope": _e(
        "insufficient_scope",
        403,
        "The request requires higher privileges than provided by the webhook token",
    ),
    "user_access_error": _e(
        "user_access_error", 403, "The user does not have access to the application"
    ),
    "REST_UNAVAILABLE_ON_PLAN": _e(
        "ACCESS_DENIED", 403, "REST API is available only on commercial plans"
    ),
    "INVALID_REQUEST": _e("INVALID_REQUEST", 400, "Https required"),
    "ERROR_METHOD_NOT_FOUND": _e("ERROR_METHOD_NOT_FOUND", 404, "Method not found!"),
    "ERROR_BATCH_LENGTH_EXCEEDED": _e(
        "ERROR_BATCH_LENGTH_EXCEEDED", 400, "Max batch length exceeded"
    ),
    "ERROR_BATCH_METHOD_NOT_ALLOWED": _e(
        "ERROR_BATCH_METHOD_NOT_ALLOWED", 405, "Method is not allowed for batch usage"
    ),
}


def entry(name: str) -> ErrorEntry:
    """The catalogue row called ``name``; an unknown name is a programming error."""
    return CATALOGUE[name]


class RestError(Exception):
    """Raised anywhere below the HTTP layer; the layer turns it into an error envelope."""

    def __init__(self, name: str, description: str | None = None, **details: str) -> None:
        row = CATALOGUE[name]
        text = description if description is not None else row.description
        if details:
            text = text.format(**details)
        super().__init__(text)
        self.name = name
        self.code = row.code
        self.status = row.status
        self.description = text
