"""`b24-worker`: the worker's command line.

b24-worker run                 apply the commands on UPDATE_QUEUE
b24-worker schema [--event X]  print the JSON Schema of the command (or an event)
b24-worker schema --asyncapi   print the AsyncAPI document of the queues and messages
b24-worker validate FILE...    check JSON Lines of commands before publishing them
b24-worker publish FILE        check and publish commands (JSON Lines or CSV); --wait for outcomes
b24-worker dlq show|replay     read dead letters by error class and code, or send them again
b24-worker check               settings, broker, queues and portal, one line each

The tools are described in docs/tools.md.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import logging
import sys
from collections.abc import Callable, Coroutine, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

# The contract and the settings are imported where a command needs them: `run`
# imports them, and all the worker is made of, with the cycle collector off.
from worker import __version__

if TYPE_CHECKING:
    from worker.settings import Settings

__all__ = ["main"]


def _schema(args: argparse.Namespace) -> int:
    from schemas import FailureEvent, SuccessEvent
    from schemas.command import command_json_schema

    schema: dict[str, Any]
    if args.asyncapi:
        from schemas.asyncapi import asyncapi_document

        schema = asyncapi_document()
    elif args.event == "success":
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
    from schemas import CommandValidationError, parse_command

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
    # No cycle collection while the worker loads and builds its parts: start-up
    # leaves about a thousand objects in cycles, and the collector's passes over
    # all it allocates cost 50-90 ms before a first call can leave (12 ms of it
    # while the contract and the settings are imported, which is why this module
    # does not import them itself). The worker freezes what start-up built and
    # turns the collector back on (tune_collector) before its first delivery.
    gc.disable()
    try:
        return _start_and_run()
    finally:
        gc.enable()


def _start_and_run() -> int:
    from worker.runtime.app import run
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


def _quiet_amqp_logs() -> None:
    # The tools say in their own words when the broker cannot be reached; the
    # AMQP libraries' log lines about the same failure would only repeat it.
    for library in ("aio_pika", "aiormq"):
        logging.getLogger(library).setLevel(logging.CRITICAL)


def _tool_settings() -> Settings | None:
    from worker.settings import ConfigError, load_settings

    _quiet_amqp_logs()

    try:
        return load_settings()
    except ConfigError as exc:
        print(f"b24-worker: {exc}", file=sys.stderr)
        return None


def _publish(args: argparse.Namespace) -> int:
    from schemas.wire import JOB_ID_RULE, is_job_id
    from worker.bulk import JobStoreError, open_jobs
    from worker.tools.publish import PublishOptions, publish_file

    if args.job is not None and not is_job_id(args.job):
        print(f"b24-worker publish: --job {args.job!r}: {JOB_ID_RULE}", file=sys.stderr)
        return 2
    settings = _tool_settings()
    if settings is None:
        return 2
    options = PublishOptions(
        path=args.file,
        amqp_url=settings.AMQP_URL.get_secret_value(),
        queue=args.queue or settings.UPDATE_QUEUE,
        fmt=args.format,
        skip_invalid=args.skip_invalid,
        wait=args.wait,
        timeout_s=args.timeout,
        failures_path=args.failures,
        portal=args.portal,
        job=args.job,
    )

    async def act() -> int:
        jobs = open_jobs(settings) if args.job is not None else None
        try:
            return await publish_file(options, jobs=jobs)
        finally:
            if jobs is not None:
                await jobs.close()

    return _run_tool("publish", act, JobStoreError)


def _run_tool(
    name: str, act: Callable[[], Coroutine[Any, Any, int]], *errors: type[Exception]
) -> int:
    """Run a tool's ``act``; one of ``errors`` is its one-line error, exit code 2."""
    try:
        return asyncio.run(act())
    except errors as exc:
        print(f"b24-worker {name}: {exc}", file=sys.stderr)
        return 2


def _dlq(args: argparse.Namespace) -> int:
    from worker.tools.broker import ToolError, connect
    from worker.tools.dlq import parse_age, purge, replay, show
    from worker.tools.letters import Selection, read_message_ids

    settings = _tool_settings()
    if settings is None:
        return 2
    message_ids = None
    if args.from_file is not None:
        try:
            message_ids = read_message_ids(args.from_file)
        except ToolError as exc:
            print(f"b24-worker dlq {args.action}: {exc}", file=sys.stderr)
            return 2
    selection = Selection(
        error_class=args.error_class,
        code=args.code,
        portal=args.portal,
        message_ids=message_ids,
    )
    older_than = None
    if args.action == "purge":
        if args.older_than is not None:
            try:
                older_than = parse_age(args.older_than)
            except ValueError as exc:
                print(f"b24-worker dlq purge: --older-than {exc}", file=sys.stderr)
                return 2
        if not args.yes and not sys.stdin.isatty():
            print(
                "b24-worker dlq purge: not asked at a terminal; add --yes to remove without asking",
                file=sys.stderr,
            )
            return 2

    async def act() -> int:
        connection = await connect(settings.AMQP_URL.get_secret_value())
        async with connection:
            if args.action == "show":
                return await show(
                    connection,
                    settings.DEAD_LETTER_QUEUE,
                    selection,
                    limit=args.limit,
                    as_json=args.json,
                    out=sys.stdout,
                    err=sys.stderr,
                )
            if args.action == "purge":
                return await purge(
                    connection,
                    settings.DEAD_LETTER_QUEUE,
                    selection,
                    older_than=older_than,
                    confirm=None if args.yes else _confirm_purge(args, settings.DEAD_LETTER_QUEUE),
                    out=sys.stdout,
                )
            return await replay(
                connection,
                settings.DEAD_LETTER_QUEUE,
                settings.UPDATE_QUEUE,
                selection,
                limit=args.limit,
                out=sys.stdout,
            )

    return _run_tool(f"dlq {args.action}", act, ToolError)


def _confirm_purge(args: argparse.Namespace, queue: str) -> Callable[[int], bool]:
    def confirm(count: int) -> bool:
        what = " ".join(
            part
            for part in (
                f"of class {args.error_class}" if args.error_class else "",
                f"with code {args.code}" if args.code else "",
                f"for portal {args.portal}" if args.portal else "",
                f"listed in {args.from_file}" if args.from_file else "",
                f"older than {args.older_than}" if args.older_than else "",
            )
            if part
        )
        try:
            answer = input(f"remove {count} dead letters {what} from {queue} for good? [y/N] ")
        except EOFError:
            return False
        return answer.strip().lower() in ("y", "yes")

    return confirm


def _portals(args: argparse.Namespace) -> int:
    from worker.registry import RegistryError, open_registry
    from worker.tools import portals

    if args.action == "keygen":
        return portals.keygen(out=sys.stdout)
    settings = _tool_settings()
    if settings is None:
        return 2

    async def act() -> int:
        registry = open_registry(settings)
        try:
            if args.action == "add":
                options = portals.AddOptions(
                    key=args.key,
                    webhook_url=portals.read_secret(args.webhook_url, sys.stdin),
                    portal_url=args.portal_url,
                    client_id=args.client_id,
                    client_secret=portals.read_secret(args.client_secret, sys.stdin),
                    refresh_token=portals.read_secret(args.refresh_token, sys.stdin),
                    rate_per_second=args.rate_per_second,
                    rate_burst=args.rate_burst,
                    rate_reserve=args.rate_reserve,
                    operating_limit_s=args.operating_limit_s,
                    operating_window_s=args.operating_window_s,
                    member_id=args.member_id,
                    replace=args.replace,
                )
                return await portals.add(
                    registry, options, configured=set(settings.portals()), out=sys.stdout
                )
            if args.action == "list":
                return await portals.list_portals(registry, as_json=args.json, out=sys.stdout)
            if args.action == "show":
                return await portals.show(registry, args.key, out=sys.stdout, err=sys.stderr)
            if args.action == "remove":
                return await portals.remove(
                    registry, args.key, gone=args.gone, out=sys.stdout, err=sys.stderr
                )
            return await portals.rekey(registry, out=sys.stdout)
        finally:
            await registry.close()

    return _run_tool(f"portals {args.action}", act, RegistryError)


def _jobs(args: argparse.Namespace) -> int:
    from worker.bulk import JobStoreError, open_jobs
    from worker.bulk.store import Which
    from worker.tools import jobs

    settings = _tool_settings()
    if settings is None:
        return 2

    async def act() -> int:
        store = open_jobs(settings)
        try:
            if args.action == "list":
                return await jobs.list_jobs(store, as_json_lines=args.json, out=sys.stdout)
            if args.action == "show":
                return await jobs.show(
                    store, args.job, follow=args.follow, as_json_object=args.json
                )
            if args.action == "results":
                which: Which = "failed" if args.failed else "succeeded" if args.succeeded else "all"
                return await jobs.results(
                    store, args.job, which=which, fmt=args.format, out=sys.stdout, err=sys.stderr
                )
            return await jobs.abort(store, args.job, out=sys.stdout, err=sys.stderr)
        finally:
            await store.close()

    try:
        return _run_tool(f"jobs {args.action}", act, JobStoreError)
    except KeyboardInterrupt:  # leaving `show --follow`
        return 0


def _check(args: argparse.Namespace) -> int:
    from worker.tools.check import run_checks

    _quiet_amqp_logs()
    return asyncio.run(run_checks(out=sys.stdout))


def _sandbox(argv: Sequence[str]) -> int:
    """The sandbox portal's own command line: imported only when it is asked for, so
    the worker and the producers never load it (it is the `sandbox` extra)."""
    try:
        from sandbox.__main__ import main as sandbox_main
    except ImportError as exc:
        print(
            f"b24-worker sandbox: the sandbox portal is not installed ({exc.name} is missing): "
            "pip install 'b24-update-worker[sandbox]'",
            file=sys.stderr,
        )
        return 2
    return sandbox_main(argv, prog="b24-worker sandbox")


class _Parser(argparse.ArgumentParser):
    """A parser whose epilog can be written only when its help is shown."""

    def __init__(
        self, *args: Any, epilog_from: Callable[[], str] | None = None, **kwargs: Any
    ) -> None:
        super().__init__(*args, **kwargs)
        self._epilog_from = epilog_from

    def format_help(self) -> str:
        if self._epilog_from is not None:
            self.epilog = self._epilog_from()
        return super().format_help()


def _settings_reference() -> str:
    """`run --help`'s list of the settings: it imports the settings, which `run`
    itself imports only once the cycle collector is off."""
    from worker.settings import reference_text

    return reference_text()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="b24-worker",
        description="Applies Bitrix24 crm.item.update commands taken from RabbitMQ.",
    )
    parser.add_argument(
        "--version", action="version", version=f"%(prog)s {__version__} (b24-update-worker)"
    )
    commands = parser.add_subparsers(
        dest="command", required=True, metavar="COMMAND", parser_class=_Parser
    )

    run = commands.add_parser(
        "run",
        help="apply the commands on UPDATE_QUEUE (settings: env)",
        description="Apply the commands on UPDATE_QUEUE until SIGTERM.",
        epilog_from=_settings_reference,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    run.set_defaults(handler=_run)

    schema = commands.add_parser("schema", help="print the JSON Schema of the message contract")
    schema.add_argument(
        "--event",
        choices=("success", "failure"),
        help="print an event's schema instead of the command's",
    )
    schema.add_argument(
        "--asyncapi",
        action="store_true",
        help="print the AsyncAPI 3.0 document of the queues and messages instead",
    )
    schema.add_argument("--output", "-o", metavar="FILE", help="write to FILE, not stdout")
    schema.set_defaults(handler=_schema)

    validate = commands.add_parser(
        "validate", help="check commands (JSON Lines) as the worker would, without sending"
    )
    validate.add_argument("files", nargs="+", metavar="FILE", help="JSON Lines file, or -")
    validate.add_argument("--quiet", "-q", action="store_true", help="print only the problems")
    validate.set_defaults(handler=_validate)

    publish = commands.add_parser(
        "publish", help="check commands (JSON Lines or CSV) and publish them to UPDATE_QUEUE"
    )
    publish.add_argument("file", metavar="FILE", help="JSON Lines, or CSV (a .csv name)")
    publish.add_argument("--format", choices=("jsonl", "csv"), help="override the file name's hint")
    publish.add_argument("--queue", help="publish here instead of UPDATE_QUEUE")
    publish.add_argument(
        "--portal",
        metavar="KEY",
        help="the portal of every command (a key of B24_PORTALS), sent as the x-b24-portal "
        "header; with SHARDS > 0 also part of each command's routing key",
    )
    publish.add_argument(
        "--job",
        metavar="NAME",
        help="publish the commands as (or into) bulk job NAME, sent as the x-b24-job header: "
        "b24-worker jobs show NAME follows it",
    )
    publish.add_argument(
        "--skip-invalid",
        action="store_true",
        help="publish the valid commands when some are invalid (default: publish nothing)",
    )
    publish.add_argument(
        "--wait", action="store_true", help="collect each command's outcome on a reply queue"
    )
    publish.add_argument(
        "--timeout",
        type=float,
        default=300.0,
        metavar="SECONDS",
        help="with --wait: stop waiting after this long (default 300)",
    )
    publish.add_argument(
        "--failures",
        metavar="PATH",
        help="with --wait: where failure events go (default FILE's name + .failures.jsonl)",
    )
    publish.set_defaults(handler=_publish)

    dlq = commands.add_parser("dlq", help="read or replay the dead letters on DEAD_LETTER_QUEUE")
    actions = dlq.add_subparsers(dest="action", required=True, metavar="ACTION")
    dlq_show = actions.add_parser(
        "show", help="print dead letters by error class and code; leaves them in place, in order"
    )
    dlq_replay = actions.add_parser(
        "replay", help="send matching letters' original commands back to UPDATE_QUEUE"
    )
    dlq_purge = actions.add_parser(
        "purge",
        help="remove matching letters for good (asks first, unless --yes); says how many",
    )
    dlq_purge.add_argument(
        "--older-than",
        metavar="AGE",
        help="only letters that failed longer ago than AGE: 30m, 12h, 7d (a bare number "
        "is days); a letter whose age is unknown stays",
    )
    dlq_purge.add_argument("--yes", action="store_true", help="remove without asking")
    for action in (dlq_show, dlq_replay, dlq_purge):
        action.add_argument(
            "--class", dest="error_class", metavar="CLASS", help="only this error class"
        )
        action.add_argument("--code", metavar="CODE", help="only this error code")
        action.add_argument(
            "--portal",
            metavar="KEY",
            help="only the commands for this portal (as their event or x-b24-portal names it)",
        )
        action.add_argument(
            "--from",
            dest="from_file",
            metavar="FILE",
            help="only the letters whose message id FILE lists: a `jobs results` output "
            "(JSON Lines or CSV), or one id per line",
        )
        action.set_defaults(handler=_dlq)
    for action in (dlq_show, dlq_replay):
        action.add_argument(
            "--limit", type=int, metavar="N", help="list (show) or replay at most N letters"
        )
    dlq_show.add_argument("--json", action="store_true", help="one JSON object per letter")

    _portals_parser(commands)
    _jobs_parser(commands)

    check = commands.add_parser(
        "check", help="check the settings, the broker, the queues and the portal"
    )
    check.set_defaults(handler=_check)

    # Listed here; `main` hands its arguments to the sandbox's own parser
    # (`b24-worker sandbox --help` lists them).
    commands.add_parser(
        "sandbox",
        add_help=False,
        help="serve a local Bitrix24 portal (limits, batch, errors) for demos and tests "
        "(the sandbox extra)",
    )
    return parser


def _portals_parser(commands: Any) -> None:
    portals = commands.add_parser(
        "portals",
        help="the registry of portals the workers serve, changed at run time (no secret "
        "is ever printed)",
    )
    actions = portals.add_subparsers(dest="action", required=True, metavar="ACTION")
    add = actions.add_parser(
        "add",
        help="register a portal: a webhook, or the four OAuth values; a secret given as - "
        "is read from standard input",
    )
    add.add_argument("key", metavar="KEY", help="what messages name it by (x-b24-portal)")
    add.add_argument("--webhook-url", metavar="URL", help="https://<portal>/rest/<user>/<code>/")
    add.add_argument("--portal-url", metavar="URL", help="https://<portal>, for OAuth")
    add.add_argument("--client-id", metavar="ID", help="the OAuth application's id")
    add.add_argument("--client-secret", metavar="SECRET", help="the OAuth application's secret")
    add.add_argument("--refresh-token", metavar="TOKEN", help="the portal's refresh token")
    add.add_argument("--rate-per-second", type=float, metavar="R", help="its bucket's drain")
    add.add_argument("--rate-burst", type=int, metavar="N", help="requests its bucket holds")
    add.add_argument("--rate-reserve", type=int, metavar="N", help="bucket requests left unused")
    add.add_argument("--operating-limit-s", type=float, metavar="S", help="operating seconds")
    add.add_argument("--operating-window-s", type=float, metavar="S", help="their window")
    add.add_argument(
        "--member-id",
        metavar="ID",
        help="the portal's own id (auth[member_id]): messages may name it by this too",
    )
    add.add_argument("--replace", action="store_true", help="change a portal registered already")
    listing = actions.add_parser("list", help="the registered portals, one line each")
    listing.add_argument("--json", action="store_true", help="one JSON object per portal")
    show = actions.add_parser("show", help="one portal, as JSON")
    show.add_argument("key", metavar="KEY")
    remove = actions.add_parser(
        "remove", help="forget a portal: the workers stop calling it, its commands wait"
    )
    remove.add_argument("key", metavar="KEY")
    remove.add_argument(
        "--gone",
        action="store_true",
        help="the portal is gone for good: its commands, queued and to come, end as "
        "portal_gone failures instead of waiting",
    )
    actions.add_parser("keygen", help="print a new key for REGISTRY_KEY")
    actions.add_parser(
        "rekey", help="seal every secret again under REGISTRY_KEY's first key (key rotation)"
    )
    portals.set_defaults(handler=_portals)


def _jobs_parser(commands: Any) -> None:
    jobs = commands.add_parser(
        "jobs", help="bulk jobs (publish FILE --job NAME): progress, results, abort"
    )
    actions = jobs.add_subparsers(dest="action", required=True, metavar="ACTION")
    listing = actions.add_parser("list", help="every job kept: progress, rate and estimate")
    listing.add_argument("--json", action="store_true", help="one JSON object per job")
    show = actions.add_parser("show", help="one job: progress, counts by outcome, rate, ETA")
    show.add_argument("job", metavar="JOB")
    show.add_argument(
        "--follow", action="store_true", help="redraw every second until the job has ended"
    )
    show.add_argument("--json", action="store_true", help="the job as one JSON object")
    outcomes = actions.add_parser(
        "results",
        help="each command's result; failures carry their command (dlq replay --from FILE)",
    )
    outcomes.add_argument("job", metavar="JOB")
    which = outcomes.add_mutually_exclusive_group()
    which.add_argument("--failed", action="store_true", help="only the failures")
    which.add_argument("--succeeded", action="store_true", help="only the successes")
    outcomes.add_argument("--format", choices=("jsonl", "csv"), default="jsonl")
    abort = actions.add_parser(
        "abort", help="end the job's commands not sent yet as `aborted`, without sending them"
    )
    abort.add_argument("job", metavar="JOB")
    jobs.set_defaults(handler=_jobs)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["sandbox"]:
        return _sandbox(argv[1:])
    args = build_parser().parse_args(argv)
    code: int = args.handler(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
