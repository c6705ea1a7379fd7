"""The acknowledger: every ack and hand-back of a delivery goes through `Acks`.

Acks are coalesced: one `basic.ack(multiple=true)` for a run of settled deliveries.

A batch of fifty commands settles within a few milliseconds; acking each of
them is fifty frames and fifty socket writes. `Acks` waits a moment, then acks
the longest run of consecutive delivery tags that are all settled with one
frame. A settled delivery behind one still held (its item waits behind a
retry, say) cannot be covered by `multiple` without acking the held one too,
so it is acked alone.

Delivery tags count every delivery on a channel, 1, 2, 3, ...: each channel
here carries one consumer and nothing else, so a gap in the settled tags is
always a delivery still being worked on, and `multiple` never acks one that
is not settled. A channel that closed takes its unacked deliveries with it:
the broker delivers them again, and their state here is dropped.
"""

from __future__ import annotations

import asyncio
import math
from dataclasses import dataclass, field

import aiormq
import structlog
from aiormq.abc import AbstractChannel

from worker.amqp.deliveries import Delivery

__all__ = ["Acks"]

log = structlog.get_logger("worker.amqp.acks")


@dataclass
class _Channel:
    """What is known of one channel's deliveries above its watermark."""

    watermark: int = 0  # every tag up to this one is settled and acked
    settled: dict[int, bool] = field(default_factory=dict)  # tag -> ack still to send
    ids: dict[int, str] = field(default_factory=dict)  # tag -> message id, for logs
    # Frames leave in the order they were decided: a single ack sent after a
    # `multiple` that covered its tag would be an unknown tag to the broker,
    # which closes the channel for it.
    outbox: list[tuple[int, bool]] = field(default_factory=list)
    writer: asyncio.Task[None] | None = None
    last_written: float = -math.inf  # the event loop's time of its last ack frame written


# How long after its last ack a channel is left open before it is closed.
ACK_GRACE_S = 0.5


class Acks:
    def __init__(self, *, delay_s: float = 0.002) -> None:
        self._delay_s = delay_s
        self._channels: dict[AbstractChannel, _Channel] = {}
        self._flush: asyncio.TimerHandle | None = None
        self._sending: set[asyncio.Task[None]] = set()
        self.last_written = -math.inf  # the event loop's time of the last ack frame written

    def ack(self, channel: AbstractChannel, tag: int, message_id: str) -> None:
        """Ack this delivery soon, with its neighbours when they are settled too."""
        state = self._channels.setdefault(channel, _Channel())
        state.settled[tag] = True
        state.ids[tag] = message_id
        if self._flush is None:
            self._flush = asyncio.get_running_loop().call_later(self._delay_s, self._send_all)

    def settled_elsewhere(self, channel: AbstractChannel, tag: int) -> None:
        """The delivery was nacked or rejected: nothing to ack, but the run may pass it."""
        state = self._channels.setdefault(channel, _Channel())
        state.settled[tag] = False

    async def hand_back(self, delivery: Delivery, *, message_id: str | None = None) -> None:
        """Give the delivery back to the broker (nack with requeue); the run may pass it.

        On a channel that went meanwhile the broker redelivers it anyway.
        """
        tag = delivery.delivery_tag
        if tag is None:
            return
        try:
            await delivery.channel.basic_nack(tag, requeue=True)
        except (aiormq.exceptions.AMQPError, ConnectionError, RuntimeError) as exc:
            log.warning(
                "settle.lost",
                message_id=message_id or delivery.message_id,
                error=type(exc).__name__,
                note="the broker will deliver this message again",
            )
        self.settled_elsewhere(delivery.channel, tag)

    @property
    def pending(self) -> int:
        return sum(sum(s.settled.values()) for s in self._channels.values())

    async def flush(self) -> None:
        """Send every pending ack now, and wait for the frames to be written."""
        if self._flush is not None:
            self._flush.cancel()
        self._send_all()
        while self._sending:
            await asyncio.gather(*list(self._sending), return_exceptions=True)

    async def landed(
        self, channel: AbstractChannel | None = None, *, grace_s: float = ACK_GRACE_S
    ) -> None:
        """Flush (one channel's acks, or all), then wait until ``grace_s`` has passed
        since the last ack written (on that channel).

        Before a channel is closed: a quorum queue can lose acks that reach it
        just before their channel closes (the broker stashes them while it is
        busy and drops the stash with the channel: rabbitmq-server issue 10327),
        and those deliveries would come again. One channel's flush waits for its
        own frames only: the other channels' acks never stop flowing while their
        portals are busy.
        """
        if channel is None:
            await self.flush()
            last = self.last_written
        else:
            state = self._channels.get(channel)
            if state is None:
                return
            if not channel.is_closed:
                self._send(channel, state)
            while state.writer is not None:
                await asyncio.gather(state.writer, return_exceptions=True)
            last = state.last_written
        since = asyncio.get_running_loop().time() - last
        await asyncio.sleep(max(0.0, grace_s - since))

    def _send_all(self) -> None:
        self._flush = None
        for channel, state in list(self._channels.items()):
            if channel.is_closed:
                del self._channels[channel]
                if any(state.settled.values()):
                    self._lost(state, list(state.settled))
                continue
            self._send(channel, state)

    def _send(self, channel: AbstractChannel, state: _Channel) -> None:
        # The run of consecutive settled tags above the watermark: one frame.
        run_to = state.watermark
        last_pending = 0
        while (pending := state.settled.pop(run_to + 1, None)) is not None:
            run_to += 1
            if pending:
                last_pending = run_to
            state.ids.pop(run_to, None)
        frames: list[tuple[int, bool]] = []
        if last_pending:
            frames.append((last_pending, True))
        state.watermark = run_to
        # Settled behind a delivery still held: alone, each once.
        for tag, pending in state.settled.items():
            if pending:
                frames.append((tag, False))
                state.settled[tag] = False
        if not frames:
            return
        state.outbox.extend(frames)
        if state.writer is None:
            state.writer = asyncio.ensure_future(self._write(channel, state))
            self._sending.add(state.writer)
            state.writer.add_done_callback(self._sending.discard)

    async def _write(self, channel: AbstractChannel, state: _Channel) -> None:
        try:
            while state.outbox:
                tag, multiple = state.outbox.pop(0)
                await channel.basic_ack(tag, multiple=multiple)
                self.last_written = state.last_written = asyncio.get_running_loop().time()
        except Exception as exc:  # the channel closed under us: the broker redelivers
            state.outbox.clear()
            log.warning(
                "settle.lost",
                error=type(exc).__name__,
                note="the broker will deliver these messages again",
            )
        finally:
            state.writer = None

    @staticmethod
    def _lost(state: _Channel, tags: list[int]) -> None:
        log.warning(
            "settle.lost",
            message_ids=[state.ids[t] for t in tags if t in state.ids],
            note="the channel closed before the ack: the broker will deliver these again",
        )
