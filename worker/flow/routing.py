"""Each delivery to the pipeline of its portal: the one its x-b24-portal header names.

Two kinds of delivery end here instead, with a failure event and no call to
any portal: a command naming a portal the worker does not serve (`validation`),
and a message the broker dead-lettered after too many deliveries (`unknown`,
code `DELIVERY_LIMIT`; it may crash the worker, so it is only reported).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Container, Mapping

import structlog

from schemas.events import ErrorClass
from schemas.wire import DELIVERY_COUNT_HEADER, PORTAL_HEADER
from worker.amqp.deliveries import Delivery, Source
from worker.flow.jobs import Job
from worker.flow.observer import Observer
from worker.flow.outcomes import Failed, Outcomes
from worker.flow.pipeline import Pipeline

__all__ = ["Router"]

log = structlog.get_logger("worker.flow.routing")


class Router:
    """Hands each delivery to its portal's pipeline; ends the ones no portal should get."""

    def __init__(
        self,
        *,
        pipelines: Mapping[str, Pipeline],
        default_portal: str,
        outcomes: Outcomes,
        observer: Observer,
        refresh: Callable[[], Awaitable[None]] | None = None,
        gone: Container[str] = frozenset(),
        aliases: Mapping[str, str] | None = None,
    ) -> None:
        """``refresh``: learn of portals registered since (read the registry again),
        asked before a command naming an unknown portal fails. ``gone``: portals gone
        for good, whose commands end as `portal_gone` (the runtime keeps it current)."""
        self._pipelines = pipelines  # by portal key; the runtime adds lanes to it
        self._refresh = refresh
        self._gone = gone
        # A portal's second name (its member_id) -> its key; the runtime keeps it current.
        self._aliases: Mapping[str, str] = aliases if aliases is not None else {}
        self._default_portal = default_portal
        self._outcomes = outcomes  # settles what ends here, reporting to `observer`
        self._observer = observer

    async def accept(self, message: Delivery, source: Source) -> None:
        if source == "poison":
            # Reported whatever it names, however it fails to parse: the poison
            # queue has no delivery limit, so a crash here would hold it for good.
            await self._end(message, source, _poisoned(message))
            return
        named = message.header(PORTAL_HEADER)
        if isinstance(named, bytes):
            named = named.decode("utf-8", "replace")
        key = named if isinstance(named, str) else self._default_portal
        key = self._aliases.get(key, key)  # one portal, one lane, whichever name it is given
        if key in self._gone:
            await self._end(message, source, _gone(key))
            return
        pipeline = self._pipelines.get(key)
        if pipeline is None and self._refresh is not None:
            await self._refresh_quietly()
            pipeline = self._pipelines.get(key)
        if pipeline is not None:
            await pipeline.accept(message, source)
            return
        reason = self._unknown_portal(named)
        await self._end(message, source, Failed(ErrorClass.VALIDATION, "VALIDATION", reason))

    async def _refresh_quietly(self) -> None:
        if self._refresh is None:
            return
        try:
            await self._refresh()
        except Exception as exc:  # the registry is unreachable: the portals known so far
            log.warning("registry.unread", error=str(exc))

    async def _end(self, message: Delivery, source: Source, failure: Failed) -> None:
        self._observer.consumed(source)
        job = Job.from_message(message, source)
        try:
            job.parse()  # for the item the event names; the reason stays the same
        except Exception:
            job.command = None
        await self._outcomes.settle(job, failure)

    def _unknown_portal(self, named: object) -> str:
        known = ", ".join(sorted(self._pipelines)) or "none"
        if named is None:
            return (
                f"the message has no {PORTAL_HEADER} header and the default portal "
                f"{self._default_portal!r} is not configured (configured: {known})"
            )
        if not isinstance(named, str):
            return f"the {PORTAL_HEADER} header must be a string naming a portal"
        shown = named if len(named) <= 64 else named[:64] + "..."
        return f"{PORTAL_HEADER} {shown!r} is not a configured portal (configured: {known})"


def _gone(portal: str) -> Failed:
    return Failed(
        ErrorClass.PORTAL_GONE,
        "PORTAL_GONE",
        f"portal {portal!r} is gone for good (the application was uninstalled from it, or "
        "an operator marked it gone): the command was not sent",
        portal=portal,
    )


def _poisoned(message: Delivery) -> Failed:
    delivered = message.header(DELIVERY_COUNT_HEADER)
    times = f"{delivered} times" if isinstance(delivered, int) else "too many times"
    return Failed(
        ErrorClass.UNKNOWN,
        "DELIVERY_LIMIT",
        f"the broker dead-lettered this message after it was delivered {times} without being "
        "settled (it may crash the worker); whether the portal applied it is not known: "
        "check the item before replaying it",
    )
