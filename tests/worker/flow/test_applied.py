"""notApplied compares what was sent with the item the portal returned."""

from __future__ import annotations

from worker.flow.applied import not_applied


def test_values_stored_as_sent_in_the_portal_form_are_applied() -> None:
    sent = {
        "title": "x",
        "opportunity": 10000,
        "closedate": "2024-07-31",
        "observers": ["1", 2],
        "assignedById": "6",
        "comments": "",
        "parentId1220": 2,
        "opened": "N",
    }
    item = {
        "title": "x",
        "opportunity": 10000.0,
        "closedate": "2024-07-31T03:00:00+03:00",
        "observers": [1, 2],
        "assignedById": 6,
        "comments": None,
        "parentId1220": 2,
        "opened": "N",
    }
    assert not_applied(sent, item) == []


def test_a_reverted_stage_and_a_dropped_value_are_reported() -> None:
    sent = {"stageId": "C9:WON", "begindate": "2024-07-01", "opened": "Y"}
    item = {"stageId": "NEW", "begindate": None, "opened": "N"}
    assert not_applied(sent, item) == ["stageId", "begindate", "opened"]


def test_fields_that_cannot_be_compared_are_left_out() -> None:
    sent = {"fm": {"n0": {}}, "photo": ["a.png", "aGk="], "logo": {"id": 3}, "missing": 1}
    item = {"fm": [], "photo": {"id": 9, "url": "/x"}, "logo": {"id": 3, "url": "/y"}}
    assert not_applied(sent, item) == []
