"""Log lines are JSON, and secrets registered with the mask never reach them."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from datetime import datetime, timedelta

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
    library = lines[1]
    assert library.pop("timestamp").endswith("Z")
    assert library == {
        "level": "warning",
        "logger": "aio_pika",
        "event": "lost connection to amqp://u:***@h/",
    }


def test_library_records_have_the_worker_lines_fields(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging(level="INFO", fmt="json")
    structlog.get_logger("t").warning("own", item=[2, 351])
    try:
        raise ValueError("boom")
    except ValueError:
        logging.getLogger("httpx").exception("a library's failure")
    own, library = (json.loads(line) for line in capsys.readouterr().out.splitlines())
    # The fields every line has: what happened, how bad, and when (ISO 8601, UTC).
    for line in (own, library):
        assert {"event", "level", "timestamp"} <= set(line)
        assert datetime.fromisoformat(line["timestamp"]).utcoffset() == timedelta(0)
    assert (library["level"], library["logger"]) == ("error", "httpx")
    assert library["exception"].startswith("Traceback")
    assert "ValueError: boom" in library["exception"]


def test_filtered_level(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging(level="WARNING", fmt="json")
    structlog.get_logger("t").info("quiet")
    structlog.get_logger("t").warning("loud")
    out = capsys.readouterr().out
    assert "quiet" not in out
    assert "loud" in out
