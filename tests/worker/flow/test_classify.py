"""The error table: code first, HTTP status second."""

from __future__ import annotations

import pytest

from schemas.events import ErrorClass
from worker.flow.classify import classify


@pytest.mark.parametrize(
    ("code", "status", "kind", "error_class"),
    [
        ("NOT_FOUND", 400, "outcome", ErrorClass.NOT_FOUND),
        ("ACCESS_DENIED", 400, "outcome", ErrorClass.ACCESS_DENIED),
        ("ACCESS_DENIED", None, "outcome", ErrorClass.ACCESS_DENIED),
        ("", 400, "outcome", ErrorClass.ACCESS_DENIED),
        ("CRM_FIELD_ERROR_VALUE_NOT_VALID", 400, "outcome", ErrorClass.VALIDATION),
        ("CRM_FIELD_ERROR_REQUIRED", 400, "outcome", ErrorClass.VALIDATION),
        ("100", 400, "outcome", ErrorClass.VALIDATION),
        ("UPDATE_DYNAMIC_ITEM_RESTRICTED", 400, "outcome", ErrorClass.PLAN_RESTRICTED),
        ("INTERNAL_SERVER_ERROR", 500, "retry", ErrorClass.TRANSIENT),
        ("ERROR_UNEXPECTED_ANSWER", 500, "retry", ErrorClass.TRANSIENT),
        ("SOMETHING_NEW", 502, "retry", ErrorClass.TRANSIENT),
        ("SOMETHING_NEW", 400, "outcome", ErrorClass.UNKNOWN),
        ("QUERY_LIMIT_EXCEEDED", 503, "rate_limit", None),
        ("OPERATION_TIME_LIMIT", 429, "rate_limit", None),
        ("OPERATION_TIME_LIMIT", None, "rate_limit", None),
    ],
)
def test_per_message_verdicts(
    code: str, status: int | None, kind: str, error_class: ErrorClass | None
) -> None:
    verdict = classify(code, status)
    assert (verdict.kind, verdict.error_class) == (kind, error_class)


@pytest.mark.parametrize(
    ("code", "status", "state"),
    [
        ("NO_AUTH_FOUND", 401, "bad_credentials"),
        ("INVALID_CREDENTIALS", 403, "bad_credentials"),
        ("insufficient_scope", 403, "bad_credentials"),
        ("user_access_error", 403, "bad_credentials"),
        ("OVERLOAD_LIMIT", 503, "blocked"),
        ("PORTAL_DELETED", 500, "blocked"),
        ("ACCESS_DENIED", 403, "blocked"),
        ("allowed_only_intranet_user", 403, "blocked"),
    ],
)
def test_portal_wide_states_are_not_outcomes(code: str, status: int, state: str) -> None:
    verdict = classify(code, status)
    assert (verdict.kind, verdict.portal_state, verdict.error_class) == ("portal", state, None)
