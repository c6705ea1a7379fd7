"""OAuth calls and the token endpoint: auth in query, form or JSON; expiry and refresh."""

from __future__ import annotations

from typing import Any

import pytest

from sandbox.clock import ManualClock
from tests.sandbox.client import SandboxClient

pytestmark = pytest.mark.sandbox


def tokens(b24: SandboxClient) -> dict[str, Any]:
    """Install the application: a code from the portal, exchanged at the token endpoint."""
    code = b24.http.post(f"{b24.portal.control_url}/oauth/authorize").json()["code"]
    config = b24.portal.state.config
    response = b24.http.get(
        b24.portal.token_url,
        params={
            "grant_type": "authorization_code",
            "client_id": config.client_id,
            "client_secret": config.client_secret,
            "code": code,
        },
    )
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def refresh(b24: SandboxClient, refresh_token: str, secret: str | None = None) -> Any:
    config = b24.portal.state.config
    return b24.http.post(
        b24.portal.token_url,
        data={
            "grant_type": "refresh_token",
            "client_id": config.client_id,
            "client_secret": secret or config.client_secret,
            "refresh_token": refresh_token,
        },
    )


def test_token_response_has_the_portal_fields(b24: SandboxClient) -> None:
    body = tokens(b24)
    assert body["expires_in"] == 3600
    assert body["client_endpoint"] == b24.portal.base_url + "/rest/"
    assert {"access_token", "refresh_token", "expires", "member_id", "user_id"} <= set(body)


@pytest.mark.parametrize("where", ["query", "form", "json"])
def test_auth_in_query_form_or_json_body(b24: SandboxClient, where: str) -> None:
    token = tokens(b24)["access_token"]
    url = b24.portal.oauth_url + "crm.item.get"
    params = {"entityTypeId": "2", "id": "1", "auth": token}
    if where == "query":
        response = b24.http.get(url, params=params)
    elif where == "form":
        response = b24.http.post(url, data=params)
    else:
        response = b24.http.post(url, json=params)
    assert response.status_code == 200, response.text
    assert response.json()["result"]["item"]["id"] == 1


def test_missing_or_unknown_token_is_no_auth_found(b24: SandboxClient) -> None:
    url = b24.portal.oauth_url + "crm.item.get"
    assert b24.http.post(url, json={"entityTypeId": 2, "id": 1}).json()["error"] == "NO_AUTH_FOUND"
    response = b24.http.post(url, json={"entityTypeId": 2, "id": 1, "auth": "nope"})
    assert response.status_code == 401
    assert response.json()["error"] == "NO_AUTH_FOUND"


def test_expired_token_gets_401_then_refresh_works(
    b24: SandboxClient, shared_clock: ManualClock
) -> None:
    pair = tokens(b24)
    url = b24.portal.oauth_url + "crm.item.update"
    params = {"entityTypeId": 2, "id": 1, "fields": {"title": "by app"}}
    shared_clock.advance(3600)
    expired = b24.http.post(url, json=params | {"auth": pair["access_token"]})
    assert expired.status_code == 401
    assert expired.json() == {
        "error": "expired_token",
        "error_description": "The access token provided has expired",
    }
    fresh = refresh(b24, pair["refresh_token"])
    assert fresh.status_code == 200
    new_token = fresh.json()["access_token"]
    assert new_token != pair["access_token"]
    ok = b24.http.post(url, json=params | {"auth": new_token})
    assert ok.json()["result"]["item"]["title"] == "by app"


def test_a_refresh_token_is_used_once(b24: SandboxClient) -> None:
    pair = tokens(b24)
    assert refresh(b24, pair["refresh_token"]).status_code == 200
    again = refresh(b24, pair["refresh_token"])
    assert again.status_code == 400
    assert again.json()["error"] == "invalid_grant"


def test_wrong_client_secret_is_refused(b24: SandboxClient) -> None:
    pair = tokens(b24)
    response = refresh(b24, pair["refresh_token"], secret="wrong")
    assert response.status_code == 401
    assert response.json()["error"] == "invalid_client"


def test_oauth_batch_uses_the_same_token(b24: SandboxClient) -> None:
    token = tokens(b24)["access_token"]
    response = b24.http.post(
        b24.portal.oauth_url + "batch",
        json={"auth": token, "cmd": {"a": "crm.item.get?entityTypeId=2&id=2"}},
    )
    assert response.json()["result"]["result"]["a"]["item"]["id"] == 2
