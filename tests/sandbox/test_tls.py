"""HTTPS with a self-signed certificate the sandbox makes for itself."""

from __future__ import annotations

import ssl

import httpx
import pytest

from sandbox.config import SandboxConfig
from sandbox.testing import serve_in_thread

pytestmark = pytest.mark.sandbox


def test_https_portal_answers_clients_that_trust_its_certificate() -> None:
    config = SandboxConfig(seed_items=1, https=True, limits_enabled=False)
    with serve_in_thread(config) as portal:
        assert portal.webhook_url.startswith("https://127.0.0.1:")
        assert portal.ca_file is not None
        with httpx.Client(verify=ssl.create_default_context(cafile=portal.ca_file)) as client:
            response = client.post(
                portal.webhook_url + "crm.item.get", json={"entityTypeId": 2, "id": 1}
            )
        with httpx.Client() as untrusting, pytest.raises(httpx.ConnectError):
            untrusting.get(portal.control_url + "/")
    assert response.json()["result"]["item"]["id"] == 1


def test_https_portal_passes_the_https_requirement() -> None:
    config = SandboxConfig(seed_items=1, https=True, require_https=True, limits_enabled=False)
    with serve_in_thread(config) as portal:
        assert portal.ca_file is not None
        trust = ssl.create_default_context(cafile=portal.ca_file)
        with httpx.Client(verify=trust) as client:
            response = client.post(
                portal.webhook_url + "crm.item.get", json={"entityTypeId": 2, "id": 1}
            )
    assert response.status_code == 200
