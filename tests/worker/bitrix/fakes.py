"""A scripted portal behind ``httpx.MockTransport``: it records requests and answers as told."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

WEBHOOK_CODE = "whsecretcode4242"
WEBHOOK_URL = f"https://portal.example/rest/7/{WEBHOOK_CODE}/"

Answer = httpx.Response | Exception


def envelope(result: Any, **time: float) -> httpx.Response:
    block = {"start": 1.0, "finish": 1.2, "duration": 0.2, "processing": 0.1}
    block.update(time)
    return httpx.Response(200, json={"result": result, "time": block})


def connect_error(code: int) -> httpx.ConnectError:
    """What httpx raises when no connection can be made: the OSError (``code``, an
    errno) a few levels down."""
    try:
        try:
            raise OSError(code, "cannot connect")
        except OSError as exc:
            raise httpx.ConnectError("All connection attempts failed") from exc
    except httpx.ConnectError as failure:
        return failure


def error(status: int, code: str, description: str = "text") -> httpx.Response:
    return httpx.Response(status, json={"error": code, "error_description": description})


@dataclass
class ScriptedPortal:
    """Answers each request with the next scripted answer (the last one repeats)."""

    answers: list[Answer] | Callable[[httpx.Request], Answer]
    requests: list[httpx.Request] = field(default_factory=list)

    def handler(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if callable(self.answers):
            answer = self.answers(request)
        else:
            answer = self.answers[min(len(self.requests), len(self.answers)) - 1]
        if isinstance(answer, Exception):
            raise answer
        return answer

    def client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(transport=httpx.MockTransport(self.handler))

    def body(self, index: int = -1) -> Any:
        return json.loads(self.requests[index].content)
