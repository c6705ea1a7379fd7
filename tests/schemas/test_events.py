"""The events' JSON: field names, the error class alias and the contract version."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from schemas import CONTRACT_VERSION, ErrorClass, EventError, FailureEvent, SuccessEvent


def test_success_event_json() -> None:
    event = SuccessEvent(
        messageId="m-1",
        correlationId="c-1",
        entityTypeId=2,
        id=351,
        attempts=1,
        portal="acme",
        job="prices-2026-12",
        item={"id": 351, "title": "x"},
        ignoredFields=["Title"],
        notApplied=["stageId"],
        coalescedWith=["m-2"],
        superseded=["comments"],
    )
    assert json.loads(event.to_json()) == {
        "contractVersion": CONTRACT_VERSION,
        "status": "succeeded",
        "messageId": "m-1",
        "correlationId": "c-1",
        "entityTypeId": 2,
        "id": 351,
        "attempts": 1,
        "portal": "acme",
        "job": "prices-2026-12",
        "item": {"id": 351, "title": "x"},
        "ignoredFields": ["Title"],
        "notApplied": ["stageId"],
        "verifiedByReadBack": False,
        "coalescedWith": ["m-2"],
        "superseded": ["comments"],
    }


def test_failure_event_json_uses_class_and_keeps_the_original() -> None:
    event = FailureEvent(
        messageId="m-2",
        entityTypeId=None,
        id=None,
        attempts=0,
        error=EventError(
            error_class=ErrorClass.VALIDATION,
            code="VALIDATION",
            description="the body is not valid JSON",
            retryable=False,
        ),
        command="not json",
        properties={"headers": {"x": 1}, "content_type": "text/plain"},
    )
    data = json.loads(event.to_json())
    assert data["status"] == "failed"
    assert data["contractVersion"] == 1
    assert data["error"] == {
        "class": "validation",
        "code": "VALIDATION",
        "description": "the body is not valid JSON",
        "retryable": False,
    }
    assert data["command"] == "not json"
    assert FailureEvent.model_validate_json(event.to_json()) == event


def test_error_classes_are_the_contract_ones() -> None:
    assert {c.value for c in ErrorClass} == {
        "validation",
        "not_found",
        "access_denied",
        "plan_restricted",
        "transient",
        "in_doubt",
        "portal_gone",
        "aborted",
        "unknown",
    }


def test_a_class_a_later_version_adds_is_kept_as_text() -> None:
    """`error.class` is open to additions within a contractVersion (README)."""
    error = EventError.model_validate(
        {"class": "not_yet_named", "code": "X", "description": "", "retryable": False}
    )
    assert error.error_class == "not_yet_named"
    with pytest.raises(ValidationError):
        EventError.model_validate({"class": 7, "code": "X", "description": "", "retryable": True})
