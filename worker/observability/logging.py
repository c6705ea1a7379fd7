"""structlog, configured once: JSON lines on stdout, secrets masked.

Every secret the worker knows (the AMQP password, the webhook code, OAuth
tokens) is registered here; a last processor replaces any of them that reached
a log line, wherever it came from (an exception text, a library's message).
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterable
from typing import Any

import structlog

__all__ = ["SecretMask", "configure_logging"]

MASK = "***"


class SecretMask:
    """Replaces known secret strings in the rendered line."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self._secrets: list[str] = []
        self.add(*secrets)

    def add(self, *secrets: str) -> None:
        # Short strings ("guest") would mask ordinary words; they are not secrets
        # worth the damage to every line.
        self._secrets.extend(s for s in secrets if len(s) >= 6 and s not in self._secrets)
        self._secrets.sort(key=len, reverse=True)

    def __call__(self, text: str) -> str:
        for secret in self._secrets:
            if secret in text:
                text = text.replace(secret, MASK)
        return text


def configure_logging(
    *, level: str = "INFO", fmt: str = "json", mask: SecretMask | None = None
) -> SecretMask:
    """Set up structlog and the standard library's logging to print one line per event."""
    mask = mask or SecretMask()
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if fmt == "json"
        else structlog.dev.ConsoleRenderer(colors=False)
    )

    def render_masked(logger: Any, name: str, event: Any) -> str:
        return mask(renderer(logger, name, event))

    processors: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.format_exc_info,
        render_masked,
    ]
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level)),
        logger_factory=structlog.PrintLoggerFactory(sys.stdout),
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(_MaskingFormatter(mask))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.WARNING)  # libraries: warnings and errors only
    return mask


class _MaskingFormatter(logging.Formatter):
    """Libraries' records as JSON lines like the worker's own, secrets masked."""

    def __init__(self, mask: SecretMask) -> None:
        super().__init__()
        self._mask = mask

    def format(self, record: logging.LogRecord) -> str:
        line = {
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": record.getMessage(),
        }
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return self._mask(json.dumps(line))
