"""Request parameters as the portal reads them: query string, then the body on top.

Bodies are JSON or PHP-style form encoding. An unparsable JSON body counts as
empty, and a body value overrides a query value of the same name.
"""

from __future__ import annotations

import json
from typing import Any

from sandbox import phpquery

__all__ = ["merge_params", "parse_body"]


def parse_body(body: bytes, content_type: str) -> dict[str, Any]:
    if not body:
        return {}
    kind = content_type.split(";", 1)[0].strip().lower()
    if kind.endswith("json") or (not kind and body.lstrip()[:1] == b"{"):
        try:
            decoded = json.loads(body)
        except ValueError:
            return {}
        return decoded if isinstance(decoded, dict) else {}
    if kind in ("application/x-www-form-urlencoded", "text/plain", ""):
        return phpquery.decode(body.decode("utf-8", "replace"))
    return {}


def merge_params(query: str, body: bytes, content_type: str) -> dict[str, Any]:
    params = phpquery.decode(query) if query else {}
    params.update(parse_body(body, content_type))
    return params
