"""Faults on the way between a caller and the portal: a lost answer, an HTML page.

A cloud portal sits behind load balancers and proxies. Two things they do
reach a REST client as something other than a Bitrix24 envelope:

- the connection closes after the request was read and carried out, and the
  answer never arrives (``disconnect_rate``): the caller cannot tell whether
  the call took effect;
- a proxy answers in the portal's place with an HTML page (``html_rate``,
  ``html_status``: a 502 error page, or a 200 maintenance page); the request
  never reached the portal.
"""

from __future__ import annotations

from http import HTTPStatus

from starlette.requests import Request
from starlette.responses import Response

__all__ = ["drop_connection", "html_page"]

_PAGE = (
    "<html>\r\n<head><title>{title}</title></head>\r\n<body>\r\n"
    "<center><h1>{title}</h1></center>\r\n<hr><center>nginx</center>\r\n"
    "</body>\r\n</html>\r\n"
)


def html_page(status: int) -> Response:
    """The page a proxy in front of the portal sends instead of its answer."""
    if status < 300:
        title = "Service maintenance: please try again later"
    else:
        try:
            title = f"{status} {HTTPStatus(status).phrase}"
        except ValueError:
            title = f"{status} Error"
    return Response(_PAGE.format(title=title), status_code=status, media_type="text/html")


async def drop_connection(request: Request) -> None:
    """Close the request's connection without sending a byte of the answer.

    ASGI has no message for this, so the server's own connection is used:
    uvicorn's ``receive`` belongs to the object that holds the transport.
    Returns once the server has seen the connection go; what the app sends
    after that is discarded.
    """
    transport = getattr(getattr(request.receive, "__self__", None), "transport", None)
    if transport is None:
        raise RuntimeError("this server does not expose the connection, so it cannot drop it")
    transport.abort()
    while (await request.receive())["type"] != "http.disconnect":
        pass
