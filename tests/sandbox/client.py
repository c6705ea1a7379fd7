"""A thin client for driving a running sandbox over real HTTP in tests."""

from __future__ import annotations

import ssl
from typing import Any

import httpx

from sandbox import phpquery
from sandbox.testing import RunningSandbox

__all__ = ["SandboxClient"]


class SandboxClient:
    def __init__(self, portal: RunningSandbox) -> None:
        self.portal = portal
        verify = ssl.create_default_context(cafile=portal.ca_file) if portal.ca_file else True
        self.http = httpx.Client(timeout=10, verify=verify)

    def call(
        self, method: str, params: dict[str, Any] | None = None, *, form: bool = False
    ) -> httpx.Response:
        """POST a webhook call, as JSON or as a PHP-style form."""
        url = self.portal.webhook_url + method
        if form:
            return self.http.post(
                url,
                content=phpquery.encode(params or {}),
                headers={"Content-Type": "application/x-www-form-urlencoded"},
            )
        return self.http.post(url, json=params or {})

    def ok(self, method: str, params: dict[str, Any] | None = None, *, form: bool = False) -> Any:
        """The ``result`` of a call that must succeed."""
        response = self.call(method, params, form=form)
        assert response.status_code == 200, response.text
        return response.json()["result"]

    def item(self, entity_type_id: int, item_id: int) -> dict[str, Any]:
        """An item as stored, read over the control endpoint (not counted as a REST call)."""
        response = self.http.get(f"{self.portal.control_url}/items/{entity_type_id}/{item_id}")
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    def faults(self, **patch: Any) -> dict[str, Any]:
        response = self.http.patch(f"{self.portal.control_url}/faults", json=patch)
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    def counters(self) -> dict[str, Any]:
        body: dict[str, Any] = self.http.get(f"{self.portal.control_url}/counters").json()
        return body

    def reset(self) -> None:
        self.http.post(f"{self.portal.control_url}/reset").raise_for_status()

    def close(self) -> None:
        self.http.close()
