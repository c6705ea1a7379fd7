"""structlog, configured once: JSON lines on stdout, secrets masked.

Every secret the worker knows (the AMQP password, the webhook code, OAuth
tokens) is registered here; a last processor replaces any of them that reached
a log line, wherever it came from (an exception text, a library's message).
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterable
from typing import Any

import orjson
import structlog

__all__ = ["SecretMask", "configure_logging"]

MASK = "***"


class SecretMask:
    """Replaces known secret strings in the rendered line (text or UTF-8 bytes)."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self._secrets: list[str] = []
        self._encoded: list[bytes] = []
        self.add(*secrets)

    def add(self, *secrets: str) -> None:
        # Short strings ("guest") would mask ordinary words; they are not secrets
        # worth the damage to every line.
        self._secrets.extend(s for s in secrets if len(s) >= 6 and s not in self._secrets)
        self._secrets.sort(key=len, reverse=True)
        # As JSON spells them too: a secret with a quote or a backslash in it
        # reaches a JSON line escaped.
        spellings = {s.encode() for s in self._secrets}
        spellings |= {orjson.dumps(s)[1:-1] for s in self._secrets}
        self._encoded = sorted(spellings, key=len, reverse=True)

    def __call__(self, text: str) -> str:
        for secret in self._secrets:
            if secret in text:
                text = text.replace(secret, MASK)
        return text

    def mask_bytes(self, line: bytes) -> bytes:
        for secret in self._encoded:
            if secret in line:
                line = line.replace(secret, b"***")
        return line


def configure_logging(
    *, level: str = "INFO", fmt: str = "json", mask: SecretMask | None = None
) -> SecretMask:
    """Set up structlog and the standard library's logging to print one line per event.

    JSON lines are rendered by orjson straight to bytes: the worker writes a
    line for every message, and the standard library's encoder made that line
    cost as much as validating the command.
    """
    mask = mask or SecretMask()
    stamp = structlog.processors.TimeStamper(fmt="iso", utc=True)
    processors: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        stamp,
        structlog.processors.format_exc_info,
    ]
    factory: Any
    render_record: Any
    if fmt == "json":

        def render_json(logger: Any, name: str, event: Any) -> bytes:
            return mask.mask_bytes(orjson.dumps(event, default=repr))

        def render_json_text(logger: Any, name: str, event: Any) -> str:
            return mask(orjson.dumps(event, default=repr).decode())

        processors.append(render_json)
        render_record = render_json_text
        factory = structlog.BytesLoggerFactory(sys.stdout.buffer)
    else:
        console = structlog.dev.ConsoleRenderer(colors=False)

        def render_text(logger: Any, name: str, event: Any) -> str:
            return mask(console(logger, name, event))

        processors.append(render_text)
        render_record = render_text
        factory = structlog.PrintLoggerFactory(sys.stdout)
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level)),
        logger_factory=factory,
        cache_logger_on_first_use=True,
    )
    # Other libraries' records (aio-pika, httpx, uvicorn...) through structlog's
    # bridge: the same fields as the worker's own lines, the timestamp included,
    # plus the logger's name, and the same mask.
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[
                structlog.stdlib.add_log_level,
                structlog.stdlib.add_logger_name,
                stamp,
            ],
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.format_exc_info,
                render_record,
            ],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.WARNING)  # libraries: warnings and errors only
    return mask
