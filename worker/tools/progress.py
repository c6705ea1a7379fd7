"""A progress counter on stderr: one line rewritten in place on a terminal, and
a single closing line otherwise (logs and CI output stay one line per run)."""

from __future__ import annotations

import sys
import time
from typing import TextIO

__all__ = ["Progress"]

_REDRAW_S = 0.1


class Progress:
    """`label done/total`; call `advance` as things get done and `close` once."""

    def __init__(self, label: str, total: int, *, stream: TextIO | None = None) -> None:
        self._label = label
        self._total = total
        self._stream = stream or sys.stderr
        self._live = self._stream.isatty()
        self._done = 0
        self._started = time.monotonic()
        self._drawn = 0.0

    @property
    def done(self) -> int:
        return self._done

    def advance(self, count: int = 1) -> None:
        self._done += count
        now = time.monotonic()
        if self._live and (now - self._drawn >= _REDRAW_S or self._done == self._total):
            self._drawn = now
            self._stream.write("\r" + self._line(now))
            self._stream.flush()

    def close(self) -> None:
        line = self._line(time.monotonic())
        self._stream.write(("\r" + line if self._live else line) + "\n")
        self._stream.flush()

    def _line(self, now: float) -> str:
        elapsed_s = max(now - self._started, 1e-9)
        rate = self._done / elapsed_s
        return f"{self._label} {self._done}/{self._total} in {elapsed_s:.1f} s ({rate:.0f}/s)"
