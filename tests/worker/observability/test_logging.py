"""Log lines are JSON, and secrets registered with the mask never reach them."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator

import pytest
import structlog

from worker.observability.logging import SecretMask, configure_logging


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    """These tests point structlog at pytest's captured stdout; undo that afterwards."""
    yield
    structlog.reset_defaults()
    logging.getLogger().handlers.clear()


def test_mask_replaces_every_registered_secret() -> None:
    mask = SecretMask(["S3cretCode123", "guest"])
    assert (
        mask("url https://p/rest/1/S3cretCode123/ user guest")
        == "url https://p/rest/1/***/ user guest"
    )


def test_log_lines_are_json_with_secrets_masked(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging(level="INFO", fmt="json", mask=SecretMask(["T0ken-Value-99"]))
    structlog.get_logger("t").info("called", url="https://p/rest/1/T0ken-Value-99/")
    logging.getLogger("aio_pika").warning("lost connection to amqp://u:T0ken-Value-99@h/")
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert lines[0]["event"] == "called"
    assert lines[0]["url"] == "https://p/rest/1/***/"
    assert lines[1] == {
        "level": "warning",
        "logger": "aio_pika",
        "event": "lost connection to amqp://u:***@h/",
    }


def test_filtered_level(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging(level="WARNING", fmt="json")
    structlog.get_logger("t").info("quiet")
    structlog.get_logger("t").warning("loud")
    out = capsys.readouterr().out
    assert "quiet" not in out
    assert "loud" in out
