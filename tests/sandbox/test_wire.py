"""Faults between caller and portal: answers lost to a dropped connection, HTML pages."""

from __future__ import annotations

import httpx
import pytest

from tests.sandbox.client import SandboxClient

UPDATE = {"entityTypeId": 2, "id": 1, "fields": {"title": "Changed"}}


def test_a_dropped_connection_loses_the_answer_of_a_call_that_took_effect(
    b24: SandboxClient,
) -> None:
    b24.faults(disconnect_rate=1.0)
    with pytest.raises(httpx.RemoteProtocolError, match="without sending a response"):
        b24.call("crm.item.update", UPDATE)
    b24.faults(disconnect_rate=0.0)
    assert b24.item(2, 1)["title"] == "Changed"
    counters = b24.counters()
    assert (counters["disconnects"], counters["saves"], counters["requests"]) == (1, 1, 1)
    # The portal still answers on a new connection.
    assert b24.ok("crm.item.get", {"entityTypeId": 2, "id": 1})["item"]["title"] == "Changed"


@pytest.mark.parametrize("status", [502, 200])
def test_an_html_page_answers_in_place_of_the_portal(b24: SandboxClient, status: int) -> None:
    before = b24.item(2, 1)["title"]
    b24.faults(html_rate=1.0, html_status=status)
    response = b24.call("crm.item.update", UPDATE)
    assert response.status_code == status
    assert response.headers["content-type"].startswith("text/html")
    assert response.text.startswith("<html>")
    assert b24.item(2, 1)["title"] == before  # the request never reached the portal
    counters = b24.counters()
    assert (counters["html_answers"], counters["requests"], counters["saves"]) == (1, 0, 0)


def test_the_shares_follow_the_seeded_random_source(b24: SandboxClient) -> None:
    def outcomes() -> list[str]:
        seen = []
        for _ in range(40):
            try:
                response = b24.call("crm.item.get", {"entityTypeId": 2, "id": 1})
            except httpx.RemoteProtocolError:
                seen.append("dropped")
                continue
            seen.append("html" if response.status_code == 502 else str(response.status_code))
        return seen

    b24.faults(disconnect_rate=0.25, html_rate=0.25)
    first = outcomes()
    b24.reset()  # reseeds the random source and clears the faults
    b24.faults(disconnect_rate=0.25, html_rate=0.25)
    assert outcomes() == first
    assert {"dropped", "html", "200"} <= set(first)


@pytest.mark.parametrize(
    "patch",
    [
        {"disconnect_rate": 1.5},
        {"html_rate": -0.1},
        {"html_rate": "half"},
        {"html_status": 99},
        {"html_status": "502"},
    ],
)
def test_bad_values_are_refused(b24: SandboxClient, patch: dict[str, object]) -> None:
    response = b24.http.patch(f"{b24.portal.control_url}/faults", json=patch)
    assert response.status_code == 400
    assert next(iter(patch)) in response.json()["error"]
