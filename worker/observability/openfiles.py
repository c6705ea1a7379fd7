"""The process's limit of open files, against what its portals may need.

Every portal's lane keeps its own HTTP connections (up to MAX_CALLS_IN_FLIGHT
+ 1), and with a shared limiter a busy portal holds a Redis connection too.
At a few hundred portals that passes the soft limit many systems give a
service (1,024: systemd's default, containerd's since 2.0), and a call that
cannot open a connection waits and goes again (worker.flow.calling): the
worker slows down.

The soft limit is kept that low for programs that use select(); the event
loop uses epoll, so the worker raises it to the hard limit at its start, and
says so when even that is short of what its portals may need.
"""

from __future__ import annotations

import contextlib
from types import ModuleType

from worker.flow.pipeline import MAX_CALLS_IN_FLIGHT

_resource: ModuleType | None
try:
    import resource as _resource
except ImportError:  # pragma: no cover - not a POSIX system
    _resource = None

__all__ = [
    "WHERE_THE_LIMIT_IS_RAISED",
    "hard_open_files_limit",
    "open_files_needed",
    "raise_open_files_limit",
]

# Said wherever the worker or `check` tells an operator to raise the limit.
WHERE_THE_LIMIT_IS_RAISED = "LimitNOFILE in a systemd unit, the container runtime's nofile ulimit"

# Descriptors besides the connections to the portals and the broker: the HTTP
# servers, Redis's other uses, the registry and job store, log files, the
# interpreter's own.
_BASE = 64

# Linux's default ceiling on a process's descriptors (fs.nr_open), counted for
# an unlimited limit.
_UNLIMITED_CAP = 1_048_576
_UNLIMITED = _resource.RLIM_INFINITY if _resource is not None else -1


def open_files_needed(portals: int, *, portal_connections: int, shared_limiter: bool) -> int:
    """About how many descriptors ``portals`` busy portals may hold at once, with
    ``portal_connections`` AMQP connections besides the main one."""
    per_portal = MAX_CALLS_IN_FLIGHT + 1  # its lane's HTTP pool, full
    if shared_limiter:
        per_portal += 1  # a Redis connection while its limiter is asked
    return portals * per_portal + 1 + portal_connections + _BASE


def hard_open_files_limit() -> int | None:
    """The most open files this process may have, once it raises its soft limit
    (``raise_open_files_limit``); None where the platform has no such limit."""
    if _resource is None:  # pragma: no cover - not a POSIX system
        return None
    _, hard = _resource.getrlimit(_resource.RLIMIT_NOFILE)
    return _counted(hard)


def raise_open_files_limit() -> tuple[int, int] | None:
    """Raise the soft limit of open files to the hard one; ``(before, now)``, or
    None where the platform has no such limit."""
    if _resource is None:  # pragma: no cover - not a POSIX system
        return None
    soft, hard = _resource.getrlimit(_resource.RLIMIT_NOFILE)
    before = _counted(soft)
    if before < _counted(hard):
        with contextlib.suppress(ValueError, OSError):  # refused: keep what there is
            _resource.setrlimit(_resource.RLIMIT_NOFILE, (_counted(hard), hard))
    soft, _ = _resource.getrlimit(_resource.RLIMIT_NOFILE)
    return before, _counted(soft)


def _counted(limit: int) -> int:
    """A limit as a number; unlimited counts as Linux's ceiling."""
    return _UNLIMITED_CAP if limit == _UNLIMITED else limit
