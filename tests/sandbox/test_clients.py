"""Request encodings of real clients: the official Python SDK, and the shapes others send.

The official SDK (``b24pysdk``, a test dependency) is driven for real: it speaks
only https and posts JSON to ``/rest/<user>/<code>/<method>.json``. Other
popular clients send PHP-style query strings, on GET (``bitrix24-rest``) or as
a form POST (``CRest``, ``fast-bitrix24``), reproduced here byte for byte.
"""

from __future__ import annotations

from collections.abc import Iterator
from urllib.parse import urlsplit

import b24pysdk
import pytest

from sandbox.config import SandboxConfig
from sandbox.testing import RunningSandbox, serve_in_thread
from tests.sandbox.client import SandboxClient

pytestmark = pytest.mark.sandbox


@pytest.fixture(scope="module")
def https_portal() -> Iterator[RunningSandbox]:
    with serve_in_thread(SandboxConfig(https=True, seed_items=2, limits_enabled=False)) as portal:
        yield portal


def test_official_python_sdk_update_and_batch(
    https_portal: RunningSandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert https_portal.ca_file is not None
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", https_portal.ca_file)
    token = b24pysdk.BitrixWebhook(
        domain=urlsplit(https_portal.base_url).netloc,
        webhook_token=f"{https_portal.state.config.user_id}/{https_portal.state.config.webhook_code}",
    )
    client = b24pysdk.Client(token)
    fields = {"title": "from the SDK", "observers": [2, 3], "opened": True}
    updated = client.crm.item.update(2, 1, fields).response.result
    assert (updated["item"]["title"], updated["item"]["observers"]) == ("from the SDK", [2, 3])
    assert updated["item"]["opened"] == "Y"
    batch = client.call_batch({"a": client.crm.item.get(2, 1), "b": client.crm.item.get(2, 2)})
    result = batch.response.result
    assert result.result["a"]["item"]["title"] == "from the SDK"
    assert result.result["b"]["item"]["id"] == 2
    assert https_portal.state.counters.calls["batch"] == 1


def test_get_with_a_raw_php_query_string(b24: SandboxClient) -> None:
    """bitrix24-rest builds ``fields[title]=...&fields[observers][0]=...`` itself and sends GET."""
    query = "entityTypeId=2&id=1&fields[title]=raw query&fields[observers][0]=4&start=0&"
    response = b24.http.get(f"{b24.portal.webhook_url}crm.item.update.json?{query}")
    assert response.status_code == 200, response.text
    assert b24.item(2, 1)["title"] == "raw query"
    assert b24.item(2, 1)["observers"] == [4]


def test_form_post_as_http_build_query(b24: SandboxClient) -> None:
    """CRest and fast-bitrix24 post ``http_build_query`` output, brackets percent-encoded."""
    body = (
        "entityTypeId=2&id=2&fields%5Btitle%5D=REST+Deal+%231&fields%5Bobservers%5D%5B0%5D=1"
        "&fields%5Bobservers%5D%5B1%5D=2&fields%5BufCrm_1721244707107%5D=200.05"
        "&fields%5BparentId1032%5D=2"
    )
    response = b24.http.post(
        b24.portal.webhook_url + "crm.item.update",
        content=body,
        headers={"Content-Type": "application/x-www-form-urlencoded; charset=utf-8"},
    )
    assert response.status_code == 200, response.text
    item = b24.item(2, 2)
    assert (item["title"], item["observers"]) == ("REST Deal #1", [1, 2])
    assert (item["ufCrm_1721244707107"], item["parentId1032"]) == (200.05, 2)


def test_form_batch_with_nested_cmd_query_strings(b24: SandboxClient) -> None:
    """A batch posted as a form: each ``cmd[name]`` is itself an encoded query string."""
    body = (
        "halt=0&cmd%5Bu%5D=crm.item.update%3FentityTypeId%3D2%26id%3D3"
        "%26fields%255Btitle%255D%3Dnested&cmd%5Bg%5D=crm.item.get%3FentityTypeId%3D2%26id%3D3"
    )
    response = b24.http.post(
        b24.portal.webhook_url + "batch",
        content=body,
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert response.json()["result"]["result"]["g"]["item"]["title"] == "nested"
