"""Commands read from a file for `b24-worker publish`: JSON Lines or CSV.

JSON Lines: one command per non-blank line, published byte for byte.

CSV: a header row, then one command per row.

    entityTypeId,id,title,opportunity:json,observers:json,useOriginalUfNames
    2,351,REST Deal #1,10000,"[1,2,3]",
    2,352,,,null,

- `entityTypeId` and `id` are required columns; `useOriginalUfNames` is optional.
- Every other column is a field. An empty cell means the field is not sent.
- A cell is text, sent as a JSON string exactly as written ("007" stays "007").
- A column whose header ends in `:json` holds JSON: numbers, true/false,
  null (clears the field), arrays, objects, or a quoted string. The suffix is
  not part of the field's name.

Every command is checked with `schemas.parse_command` before anything is sent.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from schemas import CommandValidationError, parse_command
from worker.tools.broker import ToolError

__all__ = ["Line", "SourceError", "detect_format", "read_commands"]

Format = Literal["jsonl", "csv"]
_JSON_SUFFIX = ":json"
_REQUIRED = ("entityTypeId", "id")


class SourceError(ToolError):
    """The file cannot be read as a whole (missing, unreadable, a bad CSV header)."""


@dataclass(frozen=True)
class Line:
    """One command from the file: its body to publish, or why it is invalid."""

    number: int  # the line of the file where the command starts
    body: bytes
    problem: str | None = None
    item: tuple[int, int] | None = None  # entityTypeId and id, once the command is checked

    @property
    def valid(self) -> bool:
        return self.problem is None


def detect_format(path: str) -> Format:
    return "csv" if path.lower().endswith(".csv") else "jsonl"


def read_commands(path: str, *, fmt: Format | None = None) -> list[Line]:
    """Every command of the file, each checked as the worker would check it."""
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise SourceError(f"{path}: cannot read: {exc.strerror}") from None
    if (fmt or detect_format(path)) == "csv":
        lines = list(_csv_lines(raw, path))
    else:
        lines = list(_jsonl_lines(raw))
    return [_checked(line) for line in lines]


def _checked(line: Line) -> Line:
    if line.problem is not None:
        return line
    try:
        command = parse_command(line.body)
    except CommandValidationError as exc:
        return Line(line.number, line.body, exc.reason)
    return Line(line.number, line.body, item=(command.entityTypeId, command.id))


def _jsonl_lines(raw: bytes) -> Iterator[Line]:
    for number, text in enumerate(raw.splitlines(), start=1):
        if text.strip():
            yield Line(number, text.strip())


def _csv_lines(raw: bytes, path: str) -> Iterator[Line]:
    try:
        text = raw.decode("utf-8-sig")  # a spreadsheet's byte-order mark is not a header
    except UnicodeDecodeError as exc:
        raise SourceError(f"{path}: not UTF-8 text (byte {exc.start})") from None
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(reader)
    except StopIteration:
        return
    columns = _columns(header, path)
    start = reader.line_num + 1
    for row in reader:
        number, start = start, reader.line_num + 1
        if not any(cell.strip() for cell in row):
            continue
        try:
            yield Line(number, _row_body(columns, row))
        except ValueError as exc:
            yield Line(number, b"", str(exc))


@dataclass(frozen=True)
class _Column:
    name: str
    is_json: bool


def _columns(header: list[str], path: str) -> list[_Column]:
    columns = []
    for cell in header:
        name = cell.strip()
        is_json = name.endswith(_JSON_SUFFIX)
        columns.append(_Column(name.removesuffix(_JSON_SUFFIX) if is_json else name, is_json))
    names = [column.name for column in columns]
    missing = [name for name in _REQUIRED if name not in names]
    if missing:
        raise SourceError(f"{path}: the header row needs the columns {', '.join(missing)}")
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise SourceError(f"{path}: columns named twice: {', '.join(repeated)}")
    if "" in names:
        raise SourceError(f"{path}: column {names.index('') + 1} has no name")
    return columns


def _row_body(columns: list[_Column], row: list[str]) -> bytes:
    if len(row) > len(columns):
        raise ValueError(f"{len(row)} cells for {len(columns)} columns")
    command: dict[str, Any] = {}
    fields: dict[str, Any] = {}
    for column, cell in zip(columns, row, strict=False):
        if cell == "":
            continue
        value = _cell_value(column, cell)
        if column.name in (*_REQUIRED, "useOriginalUfNames"):
            command[column.name] = value
        else:
            fields[column.name] = value
    for name in _REQUIRED:
        if name in command and isinstance(command[name], str) and command[name].isdigit():
            command[name] = int(command[name])
    command["fields"] = fields
    return json.dumps(command, ensure_ascii=False).encode()


def _cell_value(column: _Column, cell: str) -> Any:
    if not column.is_json:
        return cell
    try:
        return json.loads(cell)
    except ValueError:
        raise ValueError(f"{column.name}: not JSON ({cell[:40]!r})") from None
