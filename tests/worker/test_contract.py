"""The AsyncAPI document: every reference resolves, the queues are the worker's,
and its schemas accept what the worker accepts and publishes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from sandbox.config import SandboxConfig
from sandbox.testing import running_sandbox
from schemas import CommandValidationError, SuccessEvent, parse_command
from schemas.asyncapi import EVOLUTION_RULE, asyncapi_document
from schemas.events import CONTRACT_VERSION, FailureEvent
from schemas.wire import PORTAL_HEADER, item_routing_key
from tests.worker.broker import connected, publish, take
from tests.worker.e2e import events, force_error, running_worker, settings_for
from worker.amqp.topology import Topology
from worker.settings import ConfigError, Settings, load_settings
from worker.tools.replies import parse_event

ROOT = Path(__file__).resolve().parents[2]
DOCUMENT = asyncapi_document()


def _refs(value: Any) -> list[str]:
    if isinstance(value, dict):
        found = [value["$ref"]] if isinstance(value.get("$ref"), str) else []
        return found + [ref for item in value.values() for ref in _refs(item)]
    if isinstance(value, list):
        return [ref for item in value for ref in _refs(item)]
    return []


def _resolve(ref: str) -> Any:
    assert ref.startswith("#/"), ref
    node: Any = DOCUMENT
    for part in ref[2:].split("/"):
        node = node[part]
    return node


def _validator(name: str) -> jsonschema.Draft202012Validator:
    return jsonschema.Draft202012Validator({**DOCUMENT, "$ref": f"#/components/schemas/{name}"})


def test_every_reference_resolves_inside_the_document() -> None:
    refs = _refs(DOCUMENT)
    assert len(refs) > 20
    for ref in refs:
        assert _resolve(ref) is not None


def test_the_channels_are_the_worker_queues() -> None:
    fields = Settings.model_fields
    channels = DOCUMENT["channels"]
    assert DOCUMENT["asyncapi"] == "3.0.0"
    assert channels["updates"]["address"] == fields["UPDATE_QUEUE"].default
    assert channels["results"]["address"] == fields["RESULT_QUEUE"].default
    assert channels["deadLetters"]["address"] == fields["DEAD_LETTER_QUEUE"].default
    reply = DOCUMENT["operations"]["applyUpdate"]["reply"]
    assert reply["address"]["location"] == "$message.header#/reply_to"


def test_the_sharded_entry_point_is_the_exchange_the_topology_declares() -> None:
    topology = Topology(
        update_queue=Settings.model_fields["UPDATE_QUEUE"].default,
        result_queue="r",
        dead_letter_queue="d",
        shards=4,
    )
    channel = DOCUMENT["channels"]["shardedUpdates"]
    assert channel["bindings"]["amqp"]["exchange"]["name"] == topology.update_queue
    assert channel["address"] == topology.update_queue
    # The routing keys the description gives are the ones the tools publish with.
    assert "'<entityTypeId>:<id>'" in channel["description"]
    assert item_routing_key(None, 2, 351) == "2:351"
    assert "'<portal>:<entityTypeId>:<id>'" in channel["description"]
    assert item_routing_key("acme", 2, 351) == "acme:2:351"


def test_the_portal_header_is_part_of_the_command_message(monkeypatch: pytest.MonkeyPatch) -> None:
    headers = DOCUMENT["components"]["messages"]["UpdateCommand"]["headers"]
    portal = jsonschema.Draft202012Validator(headers)
    assert portal.is_valid({PORTAL_HEADER: "acme-eu.1"})
    assert not portal.is_valid({PORTAL_HEADER: "Acme"})
    assert not portal.is_valid({PORTAL_HEADER: 7})
    # The pattern is the one the settings hold portal keys to.
    portals = {"Acme": {"webhook_url": "https://a.example.com/rest/1/c0de/"}}
    monkeypatch.setenv("B24_PORTALS", json.dumps(portals))
    with pytest.raises(ConfigError, match="portal key 'Acme'"):
        load_settings()


def _sample_lines() -> list[bytes]:
    lines = []
    for path in sorted((ROOT / "examples").glob("*.jsonl")):
        lines += [line for line in path.read_bytes().splitlines() if line.strip()]
    return lines


def test_the_command_schema_agrees_with_the_parser_on_the_samples() -> None:
    validator = _validator("UpdateCommand")
    agreed = 0
    for line in _sample_lines():
        try:
            parse_command(line)
            parsed = True
        except CommandValidationError:
            parsed = False
        if parsed:
            assert validator.is_valid(json.loads(line)), line
            agreed += 1
    assert agreed >= 3
    assert not validator.is_valid({"entityTypeId": 2, "id": 0, "fields": {}})


@pytest.mark.parametrize("attempts", [1, 3])
def test_a_success_event_as_published_matches_its_schema(attempts: int) -> None:
    event = SuccessEvent(
        messageId="m1",
        correlationId="c1",
        entityTypeId=2,
        id=351,
        attempts=attempts,
        item={"id": 351, "title": "x"},
        ignoredFields=[],
        notApplied=[],
    )
    assert _validator("SuccessEvent").is_valid(json.loads(event.to_json()))
    assert not _validator("SuccessEvent").is_valid({"status": "succeeded"})


def test_the_evolution_rule_is_written_once_in_the_document_and_in_readme() -> None:
    readme = (ROOT / "README.md").read_text()
    assert EVOLUTION_RULE in DOCUMENT["info"]["description"]
    assert "### How the contract evolves\n\n" + EVOLUTION_RULE + "\n" in readme
    assert DOCUMENT["info"]["version"].startswith(f"{CONTRACT_VERSION}.")


def test_an_error_class_added_later_is_accepted_by_the_schema_and_the_readers() -> None:
    """`error.class` is open: a failure event of a newer worker still validates, parses
    with the tools' reader, and keeps its class as text."""

    def failure(error_class: str) -> dict[str, Any]:
        return {
            "contractVersion": CONTRACT_VERSION,
            "status": "failed",
            "messageId": "m1",
            "entityTypeId": 2,
            "id": 351,
            "attempts": 0,
            "error": {"class": error_class, "code": "C", "description": "x", "retryable": False},
            "command": {"entityTypeId": 2, "id": 351, "fields": {}},
            "properties": {},
        }

    schema = _validator("FailureEvent")
    assert schema.is_valid(failure("validation"))
    assert schema.is_valid(failure("portal_gone"))
    parsed = parse_event(json.dumps(failure("portal_gone")).encode())
    assert isinstance(parsed, FailureEvent)
    assert parsed.error.error_class == "portal_gone"


async def test_every_event_the_worker_publishes_matches_its_schema(amqp_url: str) -> None:
    """A success, and failures of each kind, as a running worker publishes them."""
    config = SandboxConfig(seed_items=5, limits_enabled=False)
    async with running_sandbox(config) as portal:
        force_error(portal, "INTERNAL_SERVER_ERROR", item_id=3)
        settings = settings_for(amqp_url, portal, MAX_ATTEMPTS=1)
        commands: list[tuple[bytes | dict[str, Any], str]] = [
            ({"entityTypeId": 2, "id": 1, "fields": {"title": "x", "Title": "y"}}, "ok"),
            ({"entityTypeId": 2, "id": 1, "fields": {"opened": 1}}, "validation"),
            (b"not json", "unreadable"),
            ({"entityTypeId": 2, "id": 999999, "fields": {"title": "x"}}, "not-found"),
            ({"entityTypeId": 2, "id": 3, "fields": {"title": "x"}}, "transient"),
        ]
        async with (
            running_worker(settings) as worker,
            connected(amqp_url, worker.topology) as broker,
        ):
            for body, message_id in commands:
                content_type = "application/json" if isinstance(body, dict) else "text/plain"
                await publish(
                    broker,
                    settings.UPDATE_QUEUE,
                    body,
                    message_id=message_id,
                    content_type=content_type,
                )
            succeeded = events(await take(broker, settings.RESULT_QUEUE, 1))
            failed = events(await take(broker, settings.DEAD_LETTER_QUEUE, len(commands) - 1))
    assert [event["messageId"] for event in succeeded] == ["ok"]
    assert _validator("SuccessEvent").is_valid(succeeded[0]), succeeded[0]
    classes = {event["messageId"]: event["error"]["class"] for event in failed}
    assert classes == {
        "validation": "validation",
        "unreadable": "validation",
        "not-found": "not_found",
        "transient": "transient",
    }
    for event in failed:
        errors = [e.message for e in _validator("FailureEvent").iter_errors(event)]
        assert errors == [], event
