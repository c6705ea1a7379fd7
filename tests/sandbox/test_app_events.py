"""The portal's side of an application's life: ONAPPINSTALL and ONAPPUNINSTALL sent to
a handler, form-encoded, with tokens that work and an application token to check."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs

import pytest

from sandbox.config import SandboxConfig
from sandbox.testing import serve_in_thread
from tests.sandbox.client import SandboxClient

pytestmark = pytest.mark.sandbox


class Received:
    """What the handler was sent: one form per event."""

    def __init__(self) -> None:
        self.forms: list[dict[str, str]] = []


@pytest.fixture
def handler() -> Iterator[tuple[str, Received]]:
    received = Received()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"])).decode()
            received.forms.append({k: v[0] for k, v in parse_qs(body).items()})
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            return None

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/b24/events", received
    finally:
        server.shutdown()
        server.server_close()


def control(b24: SandboxClient, path: str, body: dict[str, Any]) -> Any:
    return b24.http.post(f"{b24.portal.control_url}/{path}", json=body)


def test_an_install_sends_tokens_that_work_and_an_application_token(
    b24: SandboxClient, handler: tuple[str, Received]
) -> None:
    url, received = handler
    answer = control(b24, "app/install", {"handler": url})
    assert answer.status_code == 200, answer.text
    [form] = received.forms
    assert form["event"] == "ONAPPINSTALL"
    member_id = b24.portal.state.member_id
    assert answer.json() == {"event": "ONAPPINSTALL", "member_id": member_id, "status": 200}
    assert form["auth[member_id]"] == member_id
    assert form["auth[client_endpoint]"] == b24.portal.base_url + "/rest/"
    assert len(form["auth[application_token]"]) == 32
    assert form["data[VERSION]"] == "1"
    # The access token calls the portal; the refresh token is good at its token endpoint.
    item = b24.http.get(
        b24.portal.oauth_url + "crm.item.get",
        params={"entityTypeId": "2", "id": "1", "auth": form["auth[access_token]"]},
    )
    assert item.status_code == 200, item.text
    config = b24.portal.state.config
    renewed = b24.http.post(
        b24.portal.token_url,
        data={
            "grant_type": "refresh_token",
            "client_id": config.client_id,
            "client_secret": config.client_secret,
            "refresh_token": form["auth[refresh_token]"],
        },
    )
    assert renewed.json()["member_id"] == member_id


def test_an_uninstall_carries_the_application_token_and_revokes_the_tokens(
    b24: SandboxClient, handler: tuple[str, Received]
) -> None:
    url, received = handler
    control(b24, "app/install", {"handler": url})
    installed = received.forms[0]
    forged = control(b24, "app/uninstall", {"handler": url, "application_token": "not-it"})
    assert forged.json()["status"] == 200
    assert received.forms[1]["auth[application_token]"] == "not-it"
    still = b24.http.get(
        b24.portal.oauth_url + "crm.item.get",
        params={"entityTypeId": "2", "id": "1", "auth": installed["auth[access_token]"]},
    )
    assert still.status_code == 200  # a forgery changes nothing on the portal

    control(b24, "app/uninstall", {"handler": url, "clean": True})
    real = received.forms[2]
    assert real["event"] == "ONAPPUNINSTALL"
    assert real["data[CLEAN]"] == "1"
    assert real["auth[application_token]"] == installed["auth[application_token]"]
    assert real["auth[member_id]"] == installed["auth[member_id]"]
    assert "auth[access_token]" not in real
    gone = b24.http.get(
        b24.portal.oauth_url + "crm.item.get",
        params={"entityTypeId": "2", "id": "1", "auth": installed["auth[access_token]"]},
    )
    assert gone.json()["error"] == "NO_AUTH_FOUND"


def test_each_portal_has_a_member_id_of_its_own() -> None:
    config = SandboxConfig(seed_items=0)
    with serve_in_thread(config) as one, serve_in_thread(config) as two:
        assert one.state.member_id != two.state.member_id
        assert len(one.state.member_id) == 32
    with serve_in_thread(SandboxConfig(seed_items=0, member_id="fixedmember01")) as fixed:
        assert fixed.state.member_id == "fixedmember01"


def test_a_handler_that_does_not_answer_is_a_502(b24: SandboxClient) -> None:
    answer = control(b24, "app/install", {"handler": "http://127.0.0.1:9/nothing"})
    assert answer.status_code == 502
    assert control(b24, "app/install", {}).status_code == 400
