"""Serving an app with uvicorn: the fast loop and parser when installed, no access log.

The access log is off by default because webhook URLs carry the webhook code;
when asked for, it goes through a filter that masks the code.
"""

from __future__ import annotations

import contextlib
import gc
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

__all__ = [
    "MaskSecrets",
    "QuietServer",
    "bind_socket",
    "built_to_last",
    "listen",
    "raise_open_files_limit",
    "uvicorn_config",
]

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


def listen(host: str, port: int) -> list[socket.socket]:
    """Listening TCP sockets on every address ``host`` resolves to, as uvicorn binds a
    host and port itself (``localhost`` gets 127.0.0.1 and ::1). Port 0 picks a free
    port, the same one for every address. OSError names the address that failed."""
    infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    sockets: list[socket.socket] = []
    seen: set[tuple[int, Any]] = set()
    try:
        for family, kind, proto, _, address in infos:
            if (family, address) in seen:
                continue
            seen.add((family, address))
            if sockets and port == 0:
                address = (address[0], sockets[0].getsockname()[1], *address[2:])
            sock = socket.socket(family, kind, proto)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            try:
                sock.bind(address)
            except OSError as exc:
                where = f"[{host}]" if ":" in host else host or "*"
                raise OSError(
                    exc.errno, f"cannot listen on {where}:{port}: {exc.strerror}"
                ) from None
            sock.listen(2048)
            sock.setblocking(False)
    except BaseException:
        for sock in sockets:
            sock.close()
        raise
    return sockets


@contextlib.contextmanager
def built_to_last() -> Iterator[None]:
    """Build what lives until the process ends (the portals and their seeded items)
    with the cyclic garbage collector paused, then freeze it.

    Each pass of the collector walks every object it tracks; while hundreds of
    portals are seeded, it would walk the growing heap again and again and find
    nothing to free. Frozen, those objects are left out of every later pass,
    so a large seed does not lengthen the collector's pauses while serving.
    Reference counting still frees an item that is replaced or reset.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        gc.freeze()
        if enabled:
            gc.enable()


def raise_open_files_limit() -> None:
    """Lift the soft limit of open files to the hard one (65536 when there is none).

    Each portal holds a listening socket and its clients' connections, so a
    few hundred portals outgrow the common soft limit of 1024.
    """
    try:
        import resource
    except ImportError:  # not on this platform
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = max(soft, 65536) if hard == resource.RLIM_INFINITY else hard
    if soft != resource.RLIM_INFINITY and soft < target:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


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
