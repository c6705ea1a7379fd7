"""What an error from the portal means for a command: one table, by error code
first and HTTP status second (bitrix24-rest-facts.md, "Errors").

    Verdict.kind
      "outcome"     a terminal answer for this command: a failure event of `error_class`
      "retry"       transient: try again later through a delay tier (counts an attempt)
      "rate_limit"  wait and send again; never counts an attempt
      "portal"      a portal-wide state (bad credentials, a blocked portal): stop
                    consuming and probe; the command is handed back, never failed
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from schemas.events import ErrorClass

__all__ = ["TRANSPORT", "Verdict", "classify"]

Kind = Literal["outcome", "retry", "rate_limit", "portal"]


@dataclass(frozen=True)
class Verdict:
    kind: Kind
    error_class: ErrorClass | None = None
    portal_state: str | None = None  # "bad_credentials" or "blocked", with kind "portal"

    @property
    def retryable(self) -> bool:
        return self.kind in ("retry", "rate_limit")


_VALIDATION = Verdict("outcome", ErrorClass.VALIDATION)
_NOT_FOUND = Verdict("outcome", ErrorClass.NOT_FOUND)
_ACCESS_DENIED = Verdict("outcome", ErrorClass.ACCESS_DENIED)
_PLAN = Verdict("outcome", ErrorClass.PLAN_RESTRICTED)
_RETRY = Verdict("retry", ErrorClass.TRANSIENT)
_RATE = Verdict("rate_limit")
_CREDENTIALS = Verdict("portal", portal_state="bad_credentials")
_BLOCKED = Verdict("portal", portal_state="blocked")
_UNKNOWN = Verdict("outcome", ErrorClass.UNKNOWN)

# (code, status) rows win over (code, None) rows, which win over (None, status).
_TABLE: dict[tuple[str | None, int | None], Verdict] = {
    ("CRM_FIELD_ERROR_VALUE_NOT_VALID", None): _VALIDATION,
    ("CRM_FIELD_ERROR_REQUIRED", None): _VALIDATION,
    ("100", None): _VALIDATION,  # a scalar for a multiple field, or a missing parameter
    ("NOT_FOUND", None): _NOT_FOUND,
    ("ACCESS_DENIED", 400): _ACCESS_DENIED,  # no right to edit items of this type
    ("ACCESS_DENIED", None): _ACCESS_DENIED,  # inside a batch: no status of its own
    ("ACCESS_DENIED", 403): _BLOCKED,  # "REST API is available only on commercial plans"
    ("", None): _ACCESS_DENIED,  # not allowed to move the item to that stage
    ("UPDATE_DYNAMIC_ITEM_RESTRICTED", None): _PLAN,
    ("QUERY_LIMIT_EXCEEDED", None): _RATE,
    ("OPERATION_TIME_LIMIT", None): _RATE,
    ("OVERLOAD_LIMIT", None): _BLOCKED,
    ("PORTAL_DELETED", None): _BLOCKED,
    ("allowed_only_intranet_user", None): _BLOCKED,
    ("NO_AUTH_FOUND", None): _CREDENTIALS,
    ("INVALID_CREDENTIALS", None): _CREDENTIALS,
    ("insufficient_scope", None): _CREDENTIALS,
    ("user_access_error", None): _CREDENTIALS,
    ("invalid_token", None): _CREDENTIALS,
    ("expired_token", None): _RETRY,  # the client refreshes; seen here only if that failed
    ("INTERNAL_SERVER_ERROR", None): _RETRY,
    ("ERROR_UNEXPECTED_ANSWER", None): _RETRY,
    ("ERROR_BATCH_LENGTH_EXCEEDED", None): _RATE,  # the worker's own batch was too long: resend
    ("INVALID_REQUEST", None): _CREDENTIALS,  # "Https required": a configuration problem
    (None, 500): _RETRY,
    (None, 502): _RETRY,
    (None, 503): _RETRY,
    (None, 504): _RETRY,
}


def classify(code: str | None, status: int | None) -> Verdict:
    """The verdict for an error answer; unknown 4xx codes are `unknown` outcomes."""
    for key in ((code, status), (code, None), (None, status)):
        verdict = _TABLE.get(key)
        if verdict is not None:
            return verdict
    if status is not None and status >= 500:
        return _RETRY
    return _UNKNOWN


# A timeout, a connection error or an answer that is not JSON: transient.
TRANSPORT = _RETRY
