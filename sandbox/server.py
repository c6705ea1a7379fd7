"""Serving an app with uvicorn: the fast loop and parser when installed, no access log.

The access log is off by default because webhook URLs carry the webhook code;
when asked for, it goes through a filter that masks the code.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import re
import signal
import socket
import threading
from collections.abc import Iterator
from typing import Any

import uvicorn

from sandbox.config import SandboxConfig

__all__ = ["MaskSecrets", "QuietServer", "bind_socket", "uvicorn_config"]

_WEBHOOK = re.compile(r"(/rest/\d+/)([^/\s]+)(/)")
_AUTH = re.compile(r"((?:auth|access_token|refresh_token|client_secret|code)=)[^&\s\"]+")


class MaskSecrets(logging.Filter):
    """Replaces webhook codes and tokens in log records with ``***``."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.args:
            record.args = tuple(
                self.mask(a) if isinstance(a, str) else a
                for a in (record.args if isinstance(record.args, tuple) else (record.args,))
            )
        record.msg = self.mask(str(record.msg))
        return True

    @staticmethod
    def mask(text: str) -> str:
        return _AUTH.sub(r"\1***", _WEBHOOK.sub(r"\1***\3", text))


class QuietServer(uvicorn.Server):
    """A uvicorn server that stops on SIGINT/SIGTERM and then returns normally.

    uvicorn re-raises the signal after a graceful stop, which would make the
    process exit with -15 instead of 0.
    """

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        signals = (signal.SIGINT, signal.SIGTERM)
        previous = {sig: signal.signal(sig, self.handle_exit) for sig in signals}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)


def _has(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def bind_socket(host: str, port: int) -> socket.socket:
    """A listening TCP socket (port 0 picks a free one)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.setblocking(False)
    return sock


def uvicorn_config(
    app: Any, config: SandboxConfig, *, cert_file: str | None = None, key_file: str | None = None
) -> uvicorn.Config:
    """uvicorn settings for the sandbox; TLS when both files are given."""
    options: dict[str, Any] = {
        "host": config.host,
        "port": config.port,
        "access_log": config.access_log,
        "log_level": "info" if config.access_log else "warning",
        "loop": "uvloop" if _has("uvloop") else "asyncio",
        "http": "httptools" if _has("httptools") else "h11",
        "lifespan": "off",
        "server_header": False,
        "date_header": False,
    }
    if cert_file and key_file:
        options.update(ssl_certfile=cert_file, ssl_keyfile=key_file)
    result = uvicorn.Config(app, **options)
    if config.access_log:
        logging.getLogger("uvicorn.access").addFilter(MaskSecrets())
    return result
