"""What a lane reports about its commands and its portal: one typed observer per lane.

Every metric and every log line about a command passes through the lane's
`Observer`, which knows the portal it serves, so what is counted per portal is
decided in one place (`worker.observability.observer`). `QuietObserver` hears
everything and says nothing (tests, tools).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from datetime import datetime

    from worker.amqp.deliveries import Source
    from worker.flow.jobs import Job
    from worker.flow.outcomes import Settled

__all__ = ["Observer", "QuietObserver"]


class Observer(Protocol):
    def consumed(self, source: Source, published_at: datetime | None = None) -> None:
        """A delivery reached the lane; ``published_at``: its AMQP timestamp, if any."""

    def settled(self, job: Job, settled: Settled) -> None:
        """A delivery was settled (or settling it crashed)."""

    def waited(self, seconds: float) -> None:
        """A call waited this long for the limiter before it could go."""

    def sending(self, commands: int) -> None:
        """A call carrying this many commands is sent."""

    def coalesced(self, commands: int) -> None:
        """This many commands of one item were applied together, in one call's command."""

    def answered(self, seconds: float) -> None:
        """A call came back (answered or not) after this long."""

    def rate_limited(self, code: str) -> None:
        """The portal answered a rate limit; its commands wait and go again."""

    def out_of_files(self) -> None:
        """A call could not open a connection for want of a file descriptor; its
        commands wait and go again."""

    def budget_left(self, method: str, seconds: float) -> None:
        """The operating time the method has left in the window."""

    def portal_down(self, state: str, code: str) -> None:
        """A portal-wide answer: the lane stops and probes."""

    def portal_up(self) -> None:
        """The probe answered: the lane goes on."""


class QuietObserver:
    """An observer that records nothing."""

    def consumed(self, source: Source, published_at: datetime | None = None) -> None:
        pass

    def settled(self, job: Job, settled: Settled) -> None:
        pass

    def waited(self, seconds: float) -> None:
        pass

    def sending(self, commands: int) -> None:
        pass

    def coalesced(self, commands: int) -> None:
        pass

    def answered(self, seconds: float) -> None:
        pass

    def rate_limited(self, code: str) -> None:
        pass

    def out_of_files(self) -> None:
        pass

    def budget_left(self, method: str, seconds: float) -> None:
        pass

    def portal_down(self, state: str, code: str) -> None:
        pass

    def portal_up(self) -> None:
        pass
