"""A small async API for services that put updates on the worker's queue and
want each one's outcome back.

    async with UpdateClient(amqp_url, queue="crm.item.update", portal="acme") as client:
        outcome = await client.update(2, 351, {"title": "Paid"}, timeout_s=60)
        if outcome.status == "failed":
            print(outcome.error.error_class, outcome.error.description)

- `queue` is the workers' UPDATE_QUEUE. When they run with SHARDS > 0 it names
  a consistent-hash exchange, and each command is published there with its
  item's routing key (`schemas.wire.item_routing_key`), so one item's
  updates reach one worker in the order they were sent. The client finds out
  which when it connects.
- `portal` (the client's, or one `update`'s) is sent as the x-b24-portal
  header, naming the portal the worker applies the command to, and is part of
  the routing key: name it on every update of an item, or on none.
- The command is checked locally first (`schemas.parse_command`): a bad one
  raises `CommandValidationError` and is never sent.
- Each client has one exclusive reply queue; every command carries it as
  `reply_to` and a correlation id of its own, and the worker's success event
  (or the copy of its failure event) comes back there.
- The publish is mandatory and confirmed: `PublishRefusedError` when the
  broker nacks it every time or no queue takes it.
- `TimeoutError` when no event came in time: the command is on the queue and
  may still be applied (once the client is closed, its success event goes to
  RESULT_QUEUE; a failure event always goes to DEAD_LETTER_QUEUE).
- A lost connection ends every pending `update` with `ConnectionError`.
- `send(...)` and `send_many(commands)` publish and return the message ids
  once the broker has confirmed them, without waiting for outcomes: those go to
  RESULT_QUEUE and DEAD_LETTER_QUEUE (or to `reply_to` when one is given).
- `submit_job(commands, jobs=open_jobs(settings))` publishes many commands as
  one bulk job (the x-b24-job header) and returns its id once the broker has
  confirmed them all; their outcomes go to RESULT_QUEUE and DEAD_LETTER_QUEUE,
  and the job store counts them (`b24-worker jobs show JOB`, `jobs.state(JOB)`).
- Every command carries the AMQP `timestamp` of its publish: the broker reports
  a queue's oldest waiting command by it, and the worker the delay to delivery.
- `SyncUpdateClient` offers the same methods to code that is not async.
"""

from __future__ import annotations

import asyncio
import json
import threading
import uuid
from collections.abc import Callable, Coroutine, Iterable, Mapping
from datetime import UTC, datetime
from types import TracebackType
from typing import TYPE_CHECKING, Any, Concatenate, ParamSpec, TypeVar

import aio_pika
from aio_pika.abc import AbstractConnection, DeliveryMode

from schemas import CommandValidationError, FailureEvent, SuccessEvent, parse_command
from schemas.wire import DEFAULT_UPDATE_QUEUE, JOB_HEADER, JOB_ID_RULE, PORTAL_HEADER, is_job_id
from worker import tracing
from worker.tools.broker import (
    ConfirmedPublisher,
    EntryPoint,
    PublishRefusedError,
    connect,
    entry_point,
)
from worker.tools.replies import Replies

if TYPE_CHECKING:
    from worker.bulk import JobStore

__all__ = [
    "CommandValidationError",
    "FailureEvent",
    "PublishRefusedError",
    "SuccessEvent",
    "SyncUpdateClient",
    "UpdateClient",
]


class UpdateClient:
    """Publishes crm.item.update commands and returns their outcome events."""

    def __init__(
        self, amqp_url: str, *, queue: str = DEFAULT_UPDATE_QUEUE, portal: str | None = None
    ) -> None:
        self._amqp_url = amqp_url
        self._queue = queue
        self._portal = _portal_key(portal)
        self._entry: EntryPoint | None = None
        self._connection: AbstractConnection | None = None
        self._publisher: ConfirmedPublisher | None = None
        self._replies: Replies | None = None

    async def __aenter__(self) -> UpdateClient:
        connection = await connect(self._amqp_url)
        try:
            self._entry = await entry_point(connection, self._queue)  # missing: fails here
            self._publisher = await ConfirmedPublisher(connection).open()
            self._replies = Replies(await connection.channel())
            await self._replies.open()
        except BaseException:
            await connection.close()
            raise
        connection.close_callbacks.add(self._closed)
        self._connection = connection
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._connection is not None:
            await self._connection.close()
        self._connection = None

    async def update(
        self,
        entity_type_id: int,
        item_id: int,
        fields: Mapping[str, Any],
        *,
        use_original_uf_names: bool = False,
        timeout_s: float = 60.0,
        message_id: str | None = None,
        portal: str | None = None,
    ) -> SuccessEvent | FailureEvent:
        """Send one update and return its outcome event (success or failure).

        `portal` overrides the client's portal for this update.
        """
        if self._publisher is None or self._replies is None or self._entry is None:
            raise RuntimeError("use the client inside `async with`")
        portal = _portal_key(portal) or self._portal
        command = _command(entity_type_id, item_id, fields, use_original_uf_names)
        parse_command(command)  # raises CommandValidationError: nothing is sent
        correlation_id = uuid.uuid4().hex
        outcome = self._replies.expect(correlation_id)
        message = _message(
            json.dumps(command, ensure_ascii=False).encode(),
            {PORTAL_HEADER: portal} if portal else {},
            message_id=message_id,
            correlation_id=correlation_id,
            reply_to=self._replies.name,
        )
        try:
            exchange, routing_key = self._entry.route(portal, entity_type_id, item_id)
            await self._publisher.publish(message, routing_key, exchange=exchange)
            async with asyncio.timeout(timeout_s):
                return await outcome
        except TimeoutError:
            raise TimeoutError(
                f"no outcome for message {message.message_id} within {timeout_s} s; "
                "it is queued and may still be applied"
            ) from None
        finally:
            self._replies.forget(correlation_id)

    async def send(
        self,
        entity_type_id: int,
        item_id: int,
        fields: Mapping[str, Any],
        *,
        use_original_uf_names: bool = False,
        message_id: str | None = None,
        portal: str | None = None,
        reply_to: str | None = None,
    ) -> str:
        """Publish one update and return its message id once the broker has confirmed it.

        Nothing waits for its outcome: the success event goes to ``reply_to`` (a queue
        of yours) or RESULT_QUEUE, a failure to DEAD_LETTER_QUEUE (and ``reply_to``).
        """
        command = _command(entity_type_id, item_id, fields, use_original_uf_names)
        [sent] = await self.send_many(
            [command], portal=portal, reply_to=reply_to, message_ids=[message_id]
        )
        return sent

    async def send_many(
        self,
        commands: Iterable[Mapping[str, Any]],
        *,
        portal: str | None = None,
        reply_to: str | None = None,
        message_ids: Iterable[str | None] | None = None,
        window: int = 256,
    ) -> list[str]:
        """Publish ``commands`` (crm.item.update parameters) and return their message
        ids, in order, once the broker has confirmed every one.

        Every command is checked first: one bad command raises
        `CommandValidationError` (its position in the message) and none is sent.
        Up to ``window`` publishes are awaiting their confirms at once. A publish
        the broker refuses raises `PublishRefusedError` after the rest are sent,
        naming how many were confirmed.
        """
        portal = _portal_key(portal) or self._portal
        headers = {PORTAL_HEADER: portal} if portal else {}
        ids = list(message_ids) if message_ids is not None else []
        checked = _checked(commands, what="of the batch")
        messages = [
            (
                entity_type_id,
                item_id,
                _message(
                    body,
                    headers,
                    message_id=ids[position] if position < len(ids) else None,
                    reply_to=reply_to,
                ),
            )
            for position, (entity_type_id, item_id, body) in enumerate(checked)
        ]
        refused = await self._publish_all(messages, portal, window)
        if refused:
            raise PublishRefusedError(
                f"{len(refused)} of {len(messages)} commands not confirmed: {refused[0]}"
            )
        return [str(message.message_id) for _, _, message in messages]

    async def _publish_all(
        self,
        messages: list[tuple[int, int, aio_pika.Message]],
        portal: str | None,
        window: int,
    ) -> list[BaseException]:
        """Publish each (entity type, item, message), up to ``window`` awaiting their
        confirms at once; the refusals."""
        if self._publisher is None or self._entry is None:
            raise RuntimeError("use the client inside `async with`")
        slots = asyncio.Semaphore(window)
        refused: list[BaseException] = []
        publisher, entry = self._publisher, self._entry

        async def one(entity_type_id: int, item_id: int, message: aio_pika.Message) -> None:
            try:
                exchange, routing_key = entry.route(portal, entity_type_id, item_id)
                await publisher.publish(message, routing_key, exchange=exchange)
            except PublishRefusedError as exc:
                refused.append(exc)
            finally:
                slots.release()

        tasks = []
        for entity_type_id, item_id, message in messages:
            await slots.acquire()
            tasks.append(asyncio.create_task(one(entity_type_id, item_id, message)))
        await asyncio.gather(*tasks)
        return refused

    async def submit_job(
        self,
        commands: Iterable[Mapping[str, Any]],
        *,
        jobs: JobStore,
        job: str | None = None,
        portal: str | None = None,
        window: int = 256,
    ) -> str:
        """Publish ``commands`` (crm.item.update parameters) as one bulk job and return
        its id (``job``, or a new one) once the broker has confirmed every one.

        Every command is checked first: one bad command raises
        `CommandValidationError` (its position in the message) and none is sent.
        A publish the broker refuses raises `PublishRefusedError` after the rest
        are sent; the job then counts only what was confirmed. Calling again with
        the same ``job`` adds commands to it.
        """
        if self._publisher is None or self._entry is None:
            raise RuntimeError("use the client inside `async with`")
        job = job if job is not None else f"job-{uuid.uuid4().hex[:12]}"
        if not is_job_id(job):
            raise ValueError(f"job {job!r}: {JOB_ID_RULE}")
        portal = _portal_key(portal) or self._portal
        checked = _checked(commands, what="of the job")
        headers: dict[str, Any] = {JOB_HEADER: job}
        if portal:
            headers[PORTAL_HEADER] = portal
        await jobs.publishing(job, len(checked))  # before a worker can end the first
        messages = [
            (entity_type_id, item_id, _message(body, headers))
            for entity_type_id, item_id, body in checked
        ]
        refused = await self._publish_all(messages, portal, window)
        if refused:
            await jobs.publishing(job, -len(refused))
            raise PublishRefusedError(
                f"{len(refused)} of {len(checked)} commands of job {job} not confirmed: "
                f"{refused[0]}"
            )
        return job

    def _closed(self, _: Any, error: BaseException | None = None) -> None:
        if self._replies is not None:
            self._replies.fail_all(ConnectionError(f"the broker connection closed: {error}"))


P = ParamSpec("P")
T = TypeVar("T")


def _blocking(
    method: Callable[Concatenate[UpdateClient, P], Coroutine[Any, Any, T]],
) -> Callable[Concatenate[SyncUpdateClient, P], T]:
    """An async method of `UpdateClient` as a blocking one of `SyncUpdateClient`: the same
    parameters and documentation, run on the client's own loop."""

    def blocking(self: SyncUpdateClient, /, *args: P.args, **kwargs: P.kwargs) -> T:
        return self._run(method(self._client, *args, **kwargs))

    blocking.__name__ = blocking.__qualname__ = method.__name__
    blocking.__doc__ = method.__doc__
    return blocking


class SyncUpdateClient:
    """`UpdateClient` for code that is not async: the same methods, blocking.

        with SyncUpdateClient(amqp_url, portal="acme") as client:
            client.send(2, 351, {"title": "Paid"})
            outcome = client.update(2, 352, {"title": "Paid"}, timeout_s=60)

    The client runs on an event loop of its own, in a thread of its own, started
    by ``with`` and stopped at its end. One instance may be used from several
    threads: the calls run on that one loop.
    """

    def __init__(
        self, amqp_url: str, *, queue: str = DEFAULT_UPDATE_QUEUE, portal: str | None = None
    ) -> None:
        self._client = UpdateClient(amqp_url, queue=queue, portal=portal)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    def __enter__(self) -> SyncUpdateClient:
        loop = asyncio.new_event_loop()
        thread = threading.Thread(target=loop.run_forever, name="b24-update-client", daemon=True)
        thread.start()
        self._loop, self._thread = loop, thread
        try:
            self._run(self._client.__aenter__())
        except BaseException:
            self._stop()
            raise
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        try:
            self._run(self._client.__aexit__(kind, error, traceback))
        finally:
            self._stop()

    update = _blocking(UpdateClient.update)
    send = _blocking(UpdateClient.send)
    send_many = _blocking(UpdateClient.send_many)
    submit_job = _blocking(UpdateClient.submit_job)

    def _run(self, call: Coroutine[Any, Any, T]) -> T:
        if self._loop is None:
            call.close()
            raise RuntimeError("use the client inside `with`")
        return asyncio.run_coroutine_threadsafe(call, self._loop).result()

    def _stop(self) -> None:
        loop, thread = self._loop, self._thread
        self._loop = self._thread = None
        if loop is None or thread is None:
            return
        loop.call_soon_threadsafe(loop.stop)
        thread.join()
        loop.close()


def _command(
    entity_type_id: int, item_id: int, fields: Mapping[str, Any], use_original_uf_names: bool
) -> dict[str, Any]:
    command: dict[str, Any] = {
        "entityTypeId": entity_type_id,
        "id": item_id,
        "fields": dict(fields),
    }
    if use_original_uf_names:
        command["useOriginalUfNames"] = "Y"
    return command


def _checked(commands: Iterable[Mapping[str, Any]], *, what: str) -> list[tuple[int, int, bytes]]:
    """(entity type, item, body) of each command, all checked before any is sent."""
    checked = []
    for position, command in enumerate(commands):
        try:
            parsed = parse_command(dict(command))
        except CommandValidationError as exc:
            exc.add_note(f"command {position} {what}: nothing was sent")
            raise
        body = json.dumps(dict(command), ensure_ascii=False).encode()
        checked.append((parsed.entityTypeId, parsed.id, body))
    return checked


def _message(
    body: bytes,
    headers: Mapping[str, Any],
    *,
    message_id: str | None = None,
    correlation_id: str | None = None,
    reply_to: str | None = None,
) -> aio_pika.Message:
    headers = dict(headers)
    tracing.inject_current(headers)  # the producer's trace goes on in the worker
    return aio_pika.Message(
        body=body,
        headers=headers or None,
        content_type="application/json",
        delivery_mode=DeliveryMode.PERSISTENT,
        message_id=message_id or uuid.uuid4().hex,
        correlation_id=correlation_id,
        reply_to=reply_to,
        timestamp=datetime.now(UTC),
    )


def _portal_key(portal: str | None) -> str | None:
    if portal is not None and not portal.strip():
        raise ValueError("portal: name a portal (a key of the worker's B24_PORTALS), or pass None")
    return portal
