"""The HTTP side: one keep-alive client for the portal, and what an httpx failure means.

httpx's exception text carries the request URL, and with it a webhook code
or a token, so only the exception's class name ever leaves this package.
"""

from __future__ import annotations

import errno
import ssl
import time

import httpcore
import httpx
import structlog

from worker.bitrix.errors import NoAnswerError

__all__ = ["KEEPALIVE_EXPIRY_S", "close_expired_connections", "make_http_client", "no_answer"]

log = structlog.get_logger("worker.bitrix.transport")

# The process out of file descriptors is said at most this often: every call
# then fails alike.
OUT_OF_FILES_EVERY_S = 60.0
_out_of_files_said_at: float | None = None

# How long an idle connection is kept for the next call.
KEEPALIVE_EXPIRY_S = 30.0

# A process (EMFILE) or the whole system (ENFILE) with no file descriptor left.
_OUT_OF_FILES = frozenset({errno.EMFILE, errno.ENFILE})

# Failures that happen before a byte of the request leaves this process.
_NOT_SENT: tuple[type[httpx.RequestError], ...] = (
    httpx.ConnectError,
    httpx.ConnectTimeout,
    httpx.PoolTimeout,
    httpx.UnsupportedProtocol,
    httpx.LocalProtocolError,
)


def no_answer(
    exc: httpx.RequestError, *, method: str, where: str, never_sent: bool = False
) -> NoAnswerError:
    """The `NoAnswerError` for an httpx failure, named by the exception's class only.

    A connect error or timeout, a pool timeout and a refused URL never sent
    anything (nor did anything when ``never_sent``); a read or write failure,
    or a connection the server dropped, may follow a request the portal
    received and applied. A connection that could not be opened for want of a
    file descriptor says so, and is logged at most once a minute.
    """
    kind = type(exc).__name__
    no_files = _out_of_files(exc)
    if no_files:
        kind += " (too many open files)"
        _say_out_of_files(where)
    return NoAnswerError(
        method=method,
        kind=kind,
        where=where,
        maybe_sent=not never_sent and not isinstance(exc, _NOT_SENT),
        out_of_files=no_files,
    )


def _say_out_of_files(where: str) -> None:
    global _out_of_files_said_at
    now = time.monotonic()
    if _out_of_files_said_at is not None and now - _out_of_files_said_at < OUT_OF_FILES_EVERY_S:
        return
    _out_of_files_said_at = now
    log.error(
        "process.out_of_files",
        where=where,
        hint="the worker has no file descriptor left for a connection: raise its limit "
        "of open files (the worker.started line says what it is)",
    )


def _out_of_files(exc: BaseException) -> bool:
    """Whether ``exc`` comes of having no file descriptor left (httpx wraps the
    OSError a few levels down)."""
    cause: BaseException | None = exc
    for _ in range(8):
        if cause is None:
            return False
        if isinstance(cause, OSError) and cause.errno in _OUT_OF_FILES:
            return True
        cause = cause.__cause__ or cause.__context__
    return False


def make_http_client(
    *,
    timeout_s: float,
    connect_timeout_s: float = 10.0,
    max_connections: int = 20,
    keepalive_expiry_s: float = KEEPALIVE_EXPIRY_S,
    verify: ssl.SSLContext | str | bool = True,
) -> httpx.AsyncClient:
    """An HTTP/1.1 keep-alive client for the portal and its OAuth server.

    ``timeout_s`` bounds reading an answer (the cloud cuts a request off at
    60 s, so a little more); connecting has its own, shorter bound. Redirects
    are not followed: a portal that redirects is misconfigured, and a redirect
    would carry the credential to another URL.
    """
    return httpx.AsyncClient(
        timeout=httpx.Timeout(timeout_s, connect=min(connect_timeout_s, timeout_s)),
        limits=httpx.Limits(
            max_connections=max_connections,
            max_keepalive_connections=max_connections,
            keepalive_expiry=keepalive_expiry_s,
        ),
        http1=True,
        http2=False,
        follow_redirects=False,
        verify=verify,
        headers={"User-Agent": "b24-update-worker"},
    )


async def close_expired_connections(http: httpx.AsyncClient) -> int:
    """Close the connections of ``http`` that sat idle past their keep-alive
    expiry, or that the server closed; the number closed.

    The connection pool closes such connections only when it is next used, so
    a portal that makes no more calls would keep them, and their file
    descriptors, for as long as the process runs. The pools are httpx's own
    (a private attribute); the connections' methods are httpcore's public
    interface. A connection that is not idle is never touched.
    """
    pools = [
        getattr(transport, "_pool", None)
        for transport in (getattr(http, "_transport", None), *getattr(http, "_mounts", {}).values())
    ]
    closed = 0
    for pool in pools:
        if not isinstance(pool, httpcore.AsyncConnectionPool):
            continue
        for connection in pool.connections:
            if connection.is_idle() and connection.has_expired():
                # Closed before anything else runs: the pool drops it when next used.
                await connection.aclose()
                closed += 1
    return closed
