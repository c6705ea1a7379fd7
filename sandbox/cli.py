"""Command-line options of the sandbox portal, and running it until SIGINT or SIGTERM.

Every option can also come from an environment variable ``SANDBOX_<NAME>``
(``--rate-burst`` from ``SANDBOX_RATE_BURST``); a flag given on the command
line wins. The host CLI wires these into ``b24-worker sandbox``;
``python -m sandbox`` works on its own.

``--portals N`` serves N independent portals from this one process, portal
``k`` (from 0) on port ``--port`` + k; ``--portals-file PATH`` writes their
webhook URLs as the worker's portals object (``B24_PORTALS_FILE``).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Sequence
from dataclasses import replace
from typing import Any, TextIO, get_args

from sandbox.config import (
    DEFAULT_CUSTOM_FIELDS,
    DEFAULT_WEBHOOK_CODE,
    BatchCharging,
    CustomFieldSpec,
    FmIds,
    SandboxConfig,
)
from sandbox.limits import OperatingCost
from sandbox.portals import RunningSandbox, check_ports, open_portals, written_portals_file
from sandbox.server import QuietServer, built_to_last, raise_open_files_limit, uvicorn_config
from sandbox.tls import self_signed

__all__ = ["add_arguments", "announce", "announce_portals", "config_from_args", "run"]

# What uvicorn exits with when it cannot listen: the sandbox keeps it.
STARTUP_FAILURE = 3

_D = SandboxConfig()
_TRUE = {"1", "true", "yes", "y", "on"}


def _env(name: str) -> str | None:
    return os.environ.get("SANDBOX_" + name.upper().replace("-", "_"))


def _opt(
    parser: argparse.ArgumentParser,
    name: str,
    kind: Any,
    default: Any,
    text: str,
    *,
    secret: bool = False,
) -> None:
    raw = _env(name)
    value = kind(raw) if raw is not None else default
    shown = "documented default" if secret and raw is None else "from env" if secret else value
    parser.add_argument(f"--{name}", type=kind, default=value, help=f"{text} ({shown})")


def _choice(
    parser: argparse.ArgumentParser, name: str, choices: tuple[str, ...], default: str, text: str
) -> None:
    raw = _env(name)
    value = raw.strip().lower() if raw is not None else default
    if value not in choices:
        parser.error(f"SANDBOX_{name.upper().replace('-', '_')} must be one of {choices}")
    parser.add_argument(
        f"--{name}", choices=choices, default=value, help=f"{text} (default {value})"
    )


def _flag(parser: argparse.ArgumentParser, name: str, text: str) -> None:
    raw = _env(name)
    default = raw is not None and raw.strip().lower() in _TRUE
    parser.add_argument(f"--{name}", action="store_true", default=default, help=text)


def _many(parser: argparse.ArgumentParser, name: str, text: str) -> None:
    raw = _env(name)
    default = [p for p in (raw or "").split(",") if p.strip()]
    parser.add_argument(f"--{name}", action="append", default=default, help=text)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Every sandbox option, each also readable from ``SANDBOX_<NAME>``."""
    _opt(parser, "host", str, _D.host, "address to listen on")
    _opt(parser, "port", int, _D.port, "port to listen on (the first portal's; 0: free ports)")
    _opt(parser, "portals", int, 1, "independent portals to serve, on --port, --port + 1, ...")
    _opt(
        parser,
        "portals-file",
        str,
        None,
        "write the portals' webhook URLs to this JSON file, for the worker's B24_PORTALS_FILE",
    )
    _opt(parser, "webhook-code", str, _D.webhook_code, "the webhook's secret code", secret=True)
    _opt(parser, "user-id", int, _D.user_id, "the webhook's user id")
    _opt(parser, "rate-burst", int, _D.rate_burst, "leaky bucket size X")
    _opt(parser, "rate-per-second", float, _D.rate_per_second, "leaky bucket drain Y per second")
    _opt(parser, "operating-limit-s", float, _D.operating_limit_s, "operating seconds per window")
    _opt(parser, "operating-window-s", float, _D.operating_window_s, "window of 10 baskets")
    _opt(parser, "operating-cost-s", float, _D.operating_cost_s, "operating seconds charged a call")
    _many(
        parser,
        "operating-cost",
        "METHOD=SECONDS cost of one method, or METHOD=LOW-HIGH drawn per call from "
        "--random-seed (repeatable)",
    )
    _choice(
        parser,
        "batch-charging",
        get_args(BatchCharging),
        _D.batch_charging,
        "what a batch's operating time is charged to: nested (each command to its own "
        "method) or batch (the whole batch to the method batch)",
    )
    _flag(parser, "no-limits", "switch both limits off")
    _opt(parser, "seed", int, _D.seed_items, "items made per entity type at start")
    _opt(parser, "spa-types", str, ",".join(map(str, _D.spa_types)), "smart process type ids")
    _many(parser, "custom-field", "ENTITY:CODE:TYPE[:multiple][:required] (repeatable)")
    _flag(parser, "no-default-custom-fields", "only the custom fields given with --custom-field")
    _opt(parser, "utc-offset", str, _D.utc_offset, "the portal's time zone offset")
    _choice(
        parser,
        "fm-ids",
        get_args(FmIds),
        _D.fm_ids,
        "what crm.item.update does with an existing fm entry's id: honoured (updates "
        "that entry) or ignored (adds the value again as a new entry)",
    )
    _opt(parser, "latency-ms", float, _D.latency_ms, "added to every REST request")
    _opt(parser, "error-rate", float, _D.error_rate, "share of requests answered 500")
    _opt(parser, "random-seed", int, None, "seed of the fault injector's randomness")
    _flag(parser, "require-https", "refuse plain HTTP like the cloud (INVALID_REQUEST)")
    _flag(parser, "https", "serve HTTPS with a self-signed certificate made at start")
    _opt(parser, "cert-file", str, None, "serve HTTPS with this certificate instead")
    _opt(parser, "key-file", str, None, "private key of --cert-file")
    _opt(parser, "client-id", str, _D.client_id, "OAuth application client_id")
    _opt(
        parser,
        "member-id",
        str,
        None,
        "the portal's member_id in its tokens and app events (random per portal)",
    )
    _opt(
        parser,
        "client-secret",
        str,
        _D.client_secret,
        "OAuth application client_secret",
        secret=True,
    )
    _opt(parser, "access-token-ttl-s", float, _D.access_token_ttl_s, "OAuth access token life")
    _flag(parser, "access-log", "log each request (webhook codes and tokens masked)")


def _cost(text: str) -> tuple[str, OperatingCost]:
    method, _, seconds = text.partition("=")
    return method.strip().lower(), OperatingCost.parse(seconds)


def config_from_args(args: argparse.Namespace) -> SandboxConfig:
    custom = tuple(CustomFieldSpec.parse(t) for t in args.custom_field)
    return SandboxConfig(
        host=args.host,
        port=args.port,
        webhook_code=args.webhook_code,
        user_id=args.user_id,
        rate_burst=args.rate_burst,
        rate_per_second=args.rate_per_second,
        operating_limit_s=args.operating_limit_s,
        operating_window_s=args.operating_window_s,
        operating_cost_s=args.operating_cost_s,
        operating_costs=tuple(_cost(t) for t in args.operating_cost),
        limits_enabled=not args.no_limits,
        batch_charging=args.batch_charging,
        seed_items=args.seed,
        spa_types=tuple(int(t) for t in args.spa_types.split(",") if t.strip()),
        custom_fields=custom if args.no_default_custom_fields else DEFAULT_CUSTOM_FIELDS + custom,
        utc_offset=args.utc_offset,
        fm_ids=args.fm_ids,
        latency_ms=args.latency_ms,
        error_rate=args.error_rate,
        random_seed=args.random_seed,
        require_https=args.require_https,
        https=args.https or bool(args.cert_file),
        cert_file=args.cert_file,
        key_file=args.key_file,
        client_id=args.client_id,
        client_secret=args.client_secret,
        member_id=args.member_id,
        access_token_ttl_s=args.access_token_ttl_s,
        access_log=args.access_log,
    )


def _shown_code(config: SandboxConfig) -> str:
    return config.webhook_code if config.webhook_code == DEFAULT_WEBHOOK_CODE else "***"


def announce(
    config: SandboxConfig,
    out: TextIO,
    cert_file: str | None = None,
    portals_file: str | None = None,
) -> None:
    """Print where the portal listens; a webhook code other than the default is masked."""
    base = f"{config.scheme}://{config.host}:{config.port}"
    print(f"Bitrix24 sandbox portal on {base}", file=out)
    print(f"  webhook URL: {base}/rest/{config.user_id}/{_shown_code(config)}/", file=out)
    print(
        f"  OAuth calls: {base}/rest/<method>?auth=<token>; tokens: {base}/oauth/token/", file=out
    )
    print(f"  control:     {base}/_sandbox/", file=out)
    if cert_file:
        print(f"  certificate: {cert_file}", file=out)
    if portals_file:
        print(f"  portals file: {portals_file}", file=out)
    print(f"  limits:      {_limits(config)}", file=out, flush=True)


def announce_portals(
    config: SandboxConfig,
    portals: Sequence[RunningSandbox],
    out: TextIO,
    cert_file: str | None = None,
    portals_file: str | None = None,
) -> None:
    """Print each portal's key, base, webhook and control URLs, one line a portal; a
    webhook code other than the default is masked, as for one portal."""
    print(f"Bitrix24 sandbox: {len(portals)} independent portals on {config.host}", file=out)
    for portal in portals:
        base = portal.base_url
        webhook = f"{base}/rest/{config.user_id}/{_shown_code(config)}/"
        print(
            f"  {portal.key}: {base}  webhook URL: {webhook}  control: {base}/_sandbox/",
            file=out,
        )
    print("  OAuth calls: <base>/rest/<method>?auth=<token>; tokens: <base>/oauth/token/", file=out)
    if cert_file:
        print(f"  certificate: {cert_file}", file=out)
    if portals_file:
        print(f"  portals file: {portals_file}", file=out)
    limits = _limits(config) + (", each portal its own" if config.limits_enabled else "")
    print(f"  limits:      {limits}", file=out, flush=True)


def _limits(config: SandboxConfig) -> str:
    return (
        "off"
        if not config.limits_enabled
        else (
            f"{config.rate_burst} burst, {config.rate_per_second}/s; "
            f"{config.operating_limit_s:g} s per {config.operating_window_s:g} s"
            + ("; a batch charged to the method batch" if config.batch_charging == "batch" else "")
        )
    )


def run(args: argparse.Namespace) -> int:
    """Serve until SIGINT or SIGTERM; returns the process exit code."""
    config = config_from_args(args)
    count: int = args.portals
    try:
        check_ports(config.port, count)
    except ValueError as exc:
        print(f"sandbox: {exc}", file=sys.stderr)
        return 2
    with contextlib.ExitStack() as stack:
        cert, key = config.cert_file, config.key_file
        if config.https and not cert:
            cert, key = stack.enter_context(self_signed(config.host))
        if count > 1:
            raise_open_files_limit()
        try:
            with built_to_last():
                portals = open_portals(config, count, ca_file=cert)
        except OSError as exc:
            print(f"sandbox: {exc.strerror or exc}", file=sys.stderr)
            return STARTUP_FAILURE
        stack.callback(portals.close)
        if args.portals_file:
            stack.enter_context(written_portals_file(args.portals_file, portals.handles))
        if count == 1:
            first = replace(config, port=portals.handles[0].port)
            announce(first, sys.stdout, cert, args.portals_file)
        else:
            announce_portals(config, portals.handles, sys.stdout, cert, args.portals_file)
        server = QuietServer(uvicorn_config(portals.app, config, cert_file=cert, key_file=key))
        server.run(sockets=portals.sockets)
    return 0
