"""The limiter: paces requests to the portal's bucket and each method to its operating-time budget.

Waiting here is never a failure: callers wait for a token or for budget, and
rate-limit answers are fed back so the next wait is longer. One call goes:

    size = await budget.max_commands(method, wanted)     # to form the batch
    lease = await budget.acquire(method, size)           # send lease.commands of them
    await pacer.acquire()                                # right before sending
    ...send...                        # 503 QUERY_LIMIT_EXCEEDED: pacer.on_rate_limited()
    await budget.settle(lease, reports, duration_s=...)  # in a finally; [] if nothing ran
    # 429 OPERATION_TIME_LIMIT (top level or in result_error): budget.on_blocked(...)

`CallLimiter` does this for one method's calls, and picks the account (the
method the portal charges) for each: a single call's own method; a batch's
commands' method, or ``batch`` once answers show the portal charges a batch as
a whole (``charging``: the sources disagree, so it is read from the answers).

State lives in a backend: in the process by default, or in Redis, shared by
every worker serving the portal:

    pacer_backend, budget_backend = shared_backends(redis, scope=portal_host)

What needs Redis (`shared_backends`, `RedisBackend` and their codecs) is
imported on first use: a worker without LIMITER_URL never loads the Redis client.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from worker.limiter.backends import MemoryBackend, StateBackend
from worker.limiter.bucket import PacerState, RequestPacer
from worker.limiter.calls import CallLimiter, Leave, Refused
from worker.limiter.clock import Clock, FakeClock, SystemClock
from worker.limiter.lazy import on_first_use
from worker.limiter.ledger import Baskets
from worker.limiter.operating import Lease, MethodState, OperatingBudget
from worker.limiter.report import OperatingReport
from worker.limiter.turns import FirstCalls, Turn

if TYPE_CHECKING:
    from worker.limiter.backends import Availability, Codec, RedisBackend
    from worker.limiter.shared import METHOD_STATE, PACER_STATE, SharedBackends, shared_backends

__all__ = [
    "METHOD_STATE",
    "PACER_STATE",
    "Availability",
    "Baskets",
    "CallLimiter",
    "Clock",
    "Codec",
    "FakeClock",
    "FirstCalls",
    "Lease",
    "Leave",
    "MemoryBackend",
    "MethodState",
    "OperatingBudget",
    "OperatingReport",
    "PacerState",
    "RedisBackend",
    "Refused",
    "RequestPacer",
    "SharedBackends",
    "StateBackend",
    "SystemClock",
    "Turn",
    "shared_backends",
]

# The Redis backend's names through the backends package, which imports them on first use.
__getattr__ = on_first_use(
    __name__,
    {
        "Availability": "worker.limiter.backends",
        "Codec": "worker.limiter.backends",
        "RedisBackend": "worker.limiter.backends",
        "METHOD_STATE": "worker.limiter.shared",
        "PACER_STATE": "worker.limiter.shared",
        "SharedBackends": "worker.limiter.shared",
        "shared_backends": "worker.limiter.shared",
    },
)
