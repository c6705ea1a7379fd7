"""Exit 0 when an AMQP 0-9-1 broker answers at the URL, 1 otherwise.

Uses only the standard library, so it runs before anything is installed.
`--redact URL` prints the URL without its password instead.
"""

from __future__ import annotations

import socket
import sys
from urllib.parse import urlsplit


def _redact(url: str) -> str:
    parts = urlsplit(url)
    user = f"{parts.username}:***@" if parts.password else ""
    return f"{parts.scheme}://{user}{parts.hostname}:{parts.port or 5672}{parts.path}"


def answers(url: str, timeout_s: float = 3.0) -> bool:
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 5672
    try:
        with socket.create_connection((host, port), timeout=timeout_s) as sock:
            sock.settimeout(timeout_s)
            sock.sendall(b"AMQP\x00\x00\x09\x01")
            frame = sock.recv(7)
    except OSError:
        return False
    return len(frame) == 7 and frame[0] == 1  # a method frame: connection.start


def main(argv: list[str]) -> int:
    if argv[:1] == ["--redact"]:
        print(_redact(argv[1]))
        return 0
    url = argv[0] if argv else "amqp://guest:guest@127.0.0.1:5672/"
    return 0 if answers(url) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
