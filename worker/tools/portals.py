"""`b24-worker portals`: the registry of portals from the command line.

Nothing here prints a secret: `list` and `show` read only what the registry
keeps in the clear (host, kind, limits, a webhook URL with its code masked).
A secret given as `-` is read from standard input, so it stays out of the
shell's history and the process list.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import IO

from pydantic import SecretStr, ValidationError

from worker.registry import Entry, Registry, RegistryError, new_key
from worker.settings import PortalConfig

__all__ = ["AddOptions", "add", "keygen", "list_portals", "read_secret", "rekey", "remove", "show"]


@dataclass(frozen=True)
class AddOptions:
    key: str
    webhook_url: str | None = None
    portal_url: str | None = None
    client_id: str | None = None
    client_secret: str | None = None
    refresh_token: str | None = None
    rate_per_second: float | None = None
    rate_burst: int | None = None
    rate_reserve: int | None = None
    operating_limit_s: float | None = None
    operating_window_s: float | None = None
    member_id: str | None = None
    replace: bool = False


def read_secret(value: str | None, stdin: IO[str]) -> str | None:
    """``value``, or the next line of ``stdin`` when it is ``-``."""
    if value != "-":
        return value
    line = stdin.readline().strip()
    if not line:
        raise RegistryError("a secret given as '-' was expected on standard input")
    return line


async def add(
    registry: Registry, options: AddOptions, *, configured: set[str], out: IO[str]
) -> int:
    if options.key in configured:
        raise RegistryError(
            f"portal {options.key} is configured already (B24_PORTALS, B24_PORTALS_FILE or "
            "B24_PORTAL_KEY); a worker refuses a portal that is both"
        )
    fields = {
        name: value
        for name, value in vars(options).items()
        if name not in ("key", "replace") and value is not None
    }
    for name in ("webhook_url", "client_secret", "refresh_token"):
        if name in fields:
            fields[name] = SecretStr(fields[name])
    try:
        config = PortalConfig(**fields)
    except ValidationError as exc:
        problems = "; ".join(
            f"--{'.'.join(str(part) for part in e['loc']).replace('_', '-')}: {e['msg']}"
            for e in exc.errors(include_url=False, include_input=False)
        )
        raise RegistryError(problems) from None
    entry = await registry.add(options.key, config, replace=options.replace)
    print(f"{'replaced' if options.replace else 'added'} {entry.key} ({_summary(entry)})", file=out)
    return 0


async def list_portals(registry: Registry, *, as_json: bool, out: IO[str]) -> int:
    entries = await registry.entries()
    if as_json:
        for entry in entries:
            print(json.dumps(entry.as_dict(), sort_keys=True), file=out)
        return 0
    if not entries:
        print("no portals registered", file=out)
        return 0
    width = max(len(entry.key) for entry in entries)
    for entry in entries:
        print(f"{entry.key:<{width}}  {_summary(entry)}", file=out)
    print(f"{len(entries)} portal{'s' if len(entries) != 1 else ''}", file=out)
    return 0


async def show(registry: Registry, key: str, *, out: IO[str], err: IO[str]) -> int:
    entry = await registry.entry(key)
    if entry is None:
        print(f"b24-worker portals show: no portal {key} in the registry", file=err)
        return 1
    print(json.dumps(entry.as_dict(), indent=2, sort_keys=True), file=out)
    return 0


async def remove(
    registry: Registry, key: str, *, gone: bool = False, out: IO[str], err: IO[str]
) -> int:
    done = await registry.mark_gone(key) if gone else await registry.remove(key)
    if not done:
        print(f"b24-worker portals remove: no portal {key} in the registry", file=err)
        return 1
    if gone:
        print(f"marked {key} gone: its commands end as portal_gone, never sent", file=out)
    else:
        print(f"removed {key}", file=out)
    return 0


async def rekey(registry: Registry, *, out: IO[str]) -> int:
    count = await registry.rekey()
    print(
        f"sealed the secrets of {count} portal{'s' if count != 1 else ''} under the first key",
        file=out,
    )
    return 0


def keygen(*, out: IO[str]) -> int:
    print(new_key(), file=out)
    return 0


def _summary(entry: Entry) -> str:
    limits = ", ".join(f"{name} {value:g}" for name, value in (entry.limits or {}).items())
    return (
        f"{entry.kind}, {entry.host}"
        + (f", {limits}" if limits else "")
        + f", added {entry.added_at}"
        + (f", gone since {entry.gone_at}" if entry.gone_at else "")
    )
