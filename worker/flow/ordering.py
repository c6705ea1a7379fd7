"""One command per item at a time, in the order the commands arrived.

While a command for an item is in flight, or parked in a delay tier waiting for
its retry, later commands for that item wait here. They are held deliveries
(unacknowledged), so the gate holds at most what the prefetch lets in; the
broker keeps everything else.

Across a restart the parked state is gone: a retry copy then competes with
later commands for its item (README, "Guarantees").
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from worker.flow.jobs import ItemKey, Job

__all__ = ["OrderingGate"]


@dataclass
class _Lane:
    active: Job | None = None
    parked_for: str | None = None  # message id of a retry copy this lane waits for
    parked_until: float = 0.0
    waiting: deque[Job] = field(default_factory=deque)


class OrderingGate:
    """Admits a job when its item is free; `release` hands over the next one."""

    def __init__(self) -> None:
        self._lanes: dict[ItemKey, _Lane] = {}

    def __len__(self) -> int:
        """Jobs held, not counting the active ones."""
        return sum(len(lane.waiting) for lane in self._lanes.values())

    @property
    def empty(self) -> bool:
        """No item is active, parked for its retry copy, or has a command waiting."""
        return not self._lanes

    @property
    def retrying(self) -> bool:
        """Some item waits for its retry copy to come back, or holds the copy now."""
        for lane in self._lanes.values():
            if lane.parked_for is not None:
                return True
            if lane.active is not None and lane.active.source == "retry":
                return True
            if any(job.source == "retry" for job in lane.waiting):
                return True
        return False

    def admit(self, key: ItemKey, job: Job) -> bool:
        """True when the job may run now; otherwise it waits its turn."""
        lane = self._lanes.get(key)
        if lane is None:
            self._lanes[key] = _Lane(active=job)
            return True
        if lane.parked_for == job.message_id and lane.active is None:
            lane.parked_for = None
            lane.active = job
            return True
        if job.source == "retry":
            # A retry copy is older than anything waiting (after a restart the
            # lane does not know it): it goes first.
            lane.waiting.appendleft(job)
        else:
            lane.waiting.append(job)
        return False

    def following(self, key: ItemKey) -> Job | None:
        """The item's next waiting job, left where it is (coalescing looks at it)."""
        lane = self._lanes.get(key)
        return lane.waiting[0] if lane is not None and lane.waiting else None

    def take_following(self, key: ItemKey) -> Job:
        """The item's next waiting job, taken out: it rides in its active job's call."""
        return self._lanes[key].waiting.popleft()

    def put_back(self, key: ItemKey, jobs: list[Job]) -> None:
        """Jobs taken with `take_following` go back first in line, in their order (their
        merged call was not carried out)."""
        lane = self._lanes.get(key)
        if lane is None:
            lane = self._lanes[key] = _Lane()
        lane.waiting.extendleft(reversed(jobs))

    def park(self, key: ItemKey, message_id: str, *, until: float) -> None:
        """The active job went to a delay tier: hold its item until the copy returns."""
        lane = self._lanes.get(key)
        if lane is None:
            lane = self._lanes[key] = _Lane()
        lane.active = None
        lane.parked_for = message_id
        lane.parked_until = until

    def extend_park(self, key: ItemKey, message_id: str, *, until: float) -> None:
        """The copy the item is parked for went round its delay tier again: wait longer."""
        lane = self._lanes.get(key)
        if lane is not None and lane.parked_for == message_id:
            lane.parked_until = max(lane.parked_until, until)

    def discard(self, gone: Callable[[Job], bool]) -> int:
        """Drop the waiting jobs for which ``gone`` is true (their deliveries went back
        to the broker); returns how many."""
        dropped = 0
        for lane in self._lanes.values():
            kept = deque(job for job in lane.waiting if not gone(job))
            dropped += len(lane.waiting) - len(kept)
            lane.waiting = kept
        return dropped

    def take_waiting(self) -> list[Job]:
        """Every waiting job, taken out (the lane is retired); the gate is empty after."""
        taken = [job for lane in self._lanes.values() for job in lane.waiting]
        self._lanes.clear()
        return taken

    def release(self, key: ItemKey) -> Job | None:
        """The active job ended: the next waiting job becomes active and is returned."""
        lane = self._lanes.get(key)
        if lane is None:
            return None
        lane.active = None
        if lane.parked_for is not None:
            return None
        if lane.waiting:
            lane.active = lane.waiting.popleft()
            return lane.active
        del self._lanes[key]
        return None

    def expire_parked(self, now: float) -> list[Job]:
        """Lanes whose retry copy never came back in time go on; returns jobs to run."""
        ready = []
        for key, lane in list(self._lanes.items()):
            if lane.parked_for is not None and lane.parked_until <= now:
                lane.parked_for = None
                job = self.release(key)
                if job is not None:
                    ready.append(job)
        return ready
