"""The HTTP side: one keep-alive client for the portal, and what an httpx failure means.

httpx's exception text carries the request URL, and with it a webhook code
or a token, so only the exception's class name ever leaves this package.
"""

from __future__ import annotations

import errno
import ssl

import httpx

__all__ = ["describe_failure", "make_http_client", "out_of_files"]

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


def describe_failure(exc: httpx.RequestError) -> tuple[str, bool]:
    """``(kind, maybe_sent)``: the exception's class name, and whether the portal may have it.

    A connect error or timeout, a pool timeout and a refused URL never sent
    anything; a read or write failure, or a connection the server dropped,
    may follow a request the portal received and applied. A connection that
    could not be opened for want of a file descriptor says so.
    """
    kind = type(exc).__name__
    if out_of_files(exc):
        kind += " (too many open files)"
    return kind, not isinstance(exc, _NOT_SENT)


def out_of_files(exc: BaseException) -> bool:
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
    keepalive_expiry_s: float = 30.0,
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
