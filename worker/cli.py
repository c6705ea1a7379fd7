"""`b24-worker`: the worker's command line.

b24-worker run                 apply the commands on UPDATE_QUEUE
b24-worker schema [--event X]  print the JSON Schema of the command (or an event)
b24-worker validate FILE...    check JSON Lines of commands before publishing them
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from schemas import CommandValidationError, FailureEvent, SuccessEvent, parse_command
from schemas.command import command_json_schema

__all__ = ["main"]


def _schema(args: argparse.Namespace) -> int:
    schema: dict[str, Any]
    if args.event == "success":
        schema = SuccessEvent.model_json_schema(by_alias=True)
    elif args.event == "failure":
        schema = FailureEvent.model_json_schema(by_alias=True)
    else:
        schema = command_json_schema()
    text = json.dumps(schema, indent=2, ensure_ascii=False) + "\n"
    if args.output:
        Path(args.output).write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)
    return 0


def _validate(args: argparse.Namespace) -> int:
    valid = invalid = 0
    for name in args.files:
        try:
            stream = sys.stdin.buffer if name == "-" else Path(name).open("rb")  # noqa: SIM115
        except OSError as exc:
            print(f"{name}: cannot read: {exc.strerror}", file=sys.stderr)
            return 2
        with stream:
            for number, line in enumerate(stream, start=1):
                if not line.strip():
                    continue
                where = f"{name}:{number}"
                try:
                    command = parse_command(line)
                except CommandValidationError as exc:
                    invalid += 1
                    print(f"{where}: INVALID {exc.reason}")
                    continue
                valid += 1
                if not args.quiet:
                    ignored = (
                        f"; ignored (not fields of this type): {', '.join(command.ignored_fields)}"
                        if command.ignored_fields
                        else ""
                    )
                    print(
                        f"{where}: ok entityTypeId={command.entityTypeId} id={command.id} "
                        f"fields={len(command.fields_to_send())}{ignored}"
                    )
    print(f"{valid} valid, {invalid} invalid")
    return 1 if invalid else 0


def _run(args: argparse.Namespace) -> int:
    from worker.app import run
    from worker.settings import ConfigError, load_settings

    try:
        settings = load_settings()
    except ConfigError as exc:
        print(f"b24-worker: {exc}", file=sys.stderr)
        return 2
    # uvloop runs the worker's event loop faster than asyncio's own, when it is there.
    try:
        import uvloop
    except ImportError:
        return asyncio.run(run(settings))
    return uvloop.run(run(settings))


def _sandbox(args: argparse.Namespace) -> int:
    from sandbox.cli import run

    return run(args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="b24-worker",
        description="Applies Bitrix24 crm.item.update commands taken from RabbitMQ.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = commands.add_parser("run", help="apply the commands on UPDATE_QUEUE (settings: env)")
    run.set_defaults(handler=_run)

    schema = commands.add_parser("schema", help="print the JSON Schema of the message contract")
    schema.add_argument(
        "--event",
        choices=("success", "failure"),
        help="print an event's schema instead of the command's",
    )
    schema.add_argument("--output", "-o", metavar="FILE", help="write to FILE, not stdout")
    schema.set_defaults(handler=_schema)

    validate = commands.add_parser(
        "validate", help="check commands (JSON Lines) as the worker would, without sending"
    )
    validate.add_argument("files", nargs="+", metavar="FILE", help="JSON Lines file, or -")
    validate.add_argument("--quiet", "-q", action="store_true", help="print only the problems")
    validate.set_defaults(handler=_validate)

    # The sandbox is its own package; only its command line is reached from here.
    from sandbox.cli import add_arguments

    sandbox = commands.add_parser(
        "sandbox", help="serve a local Bitrix24 portal (limits, batch, errors) for demos and tests"
    )
    add_arguments(sandbox)
    sandbox.set_defaults(handler=_sandbox)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    code: int = args.handler(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
