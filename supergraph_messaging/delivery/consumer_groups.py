"""Durable consumers: each handler reads its channel's stream through a consumer group.

With ``DELIVERY = "durable"`` the worker serves handlers of exact channels
(and every ``invalidate_on``) from Redis Streams instead of Pub/Sub, so an
event published while the worker was down, restarting or stuck is delivered
when it comes back. Each handler has its own group, named
``<SERVICE_NAME>.<module>.<function>``: replicas of one service share it
(each event runs once per service), other services have their own. An entry
is acknowledged after the handler returns; on start a consumer finishes its
own pending entries first (those it received and did not acknowledge before
it was killed). A handler that keeps failing is retried ``MAX_DELIVERIES``
times, then the entry is copied to the channel's dead-letter stream, logged
at ERROR and acknowledged, and the rest of the channel goes on
(``manage.py messaging_deadletters`` and the admin replay or discard it). Failing
includes running past ``HANDLER_TIMEOUT`` (a sync handler's thread is then
abandoned: nothing can stop it) and raising a Redis error of its own while
the worker's connection still answers; only the worker's own connection
failing is an outage, which costs no attempt.

Entries that another consumer of the group received and did not acknowledge
for ``CLAIM_IDLE`` seconds (it was killed) are claimed with ``XAUTOCLAIM``.

``once=True`` handlers run inside a transaction that records
``(group, event_id)``: a redelivery finds the record and is skipped, so the
effect happens once although delivery is at least once.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from typing import Any

import redis
from asgiref.sync import sync_to_async
from django.db import IntegrityError, close_old_connections, transaction

from supergraph_messaging import counters, tracing
from supergraph_messaging.conf import conf
from supergraph_messaging.delivery import streams
from supergraph_messaging.redis.client import get_redis_client
from supergraph_messaging.redis.errors import REDIS_ERRORS
from supergraph_messaging.redis.serialization import UNDECODABLE, decode_or_undecodable
from supergraph_messaging.signals import stream_reset

logger = logging.getLogger("supergraph_messaging.groups")

READ_COUNT = 100
BLOCK_MS = 1000
RETRY_BASE = 0.05
#: Seconds between looks for a STREAM_HARD_MAXLEN cut (and at every idle read).
RESET_CHECK_INTERVAL = 5.0
#: Failure lines per channel and minute; a stuck channel's further failures are counted, not logged.
LOG_BURST = 20


def group_name(handler: Any) -> str:
    return f"{conf.service_name}.{handler.name}"


def consumer_name(given: str | None = None) -> str:
    """Stable across restarts (``messaging_listen --consumer``, else ``$SGM_CONSUMER``, else the host name),
    so a restarted worker finds its own pending entries first and handles them before newer ones:
    per-channel order survives a crash. Two workers on one host need different names."""
    return given or os.environ.get("SGM_CONSUMER") or socket.gethostname()


def dead_letter_key(channel: str) -> str:
    return streams.keys(channel)[0] + ":dead"


def _run_once(group: str, event_id: str, func: Any, args: tuple[Any, ...]) -> bool:
    """Apply ``func`` and record it in one transaction; False when this group applied the event before."""
    from supergraph_messaging.models import ProcessedEvent

    close_old_connections()
    try:
        with transaction.atomic():
            try:
                with transaction.atomic():
                    ProcessedEvent.objects.create(group=group, event_id=event_id)
            except IntegrityError:
                return False
            func(*args)
            return True
    finally:
        close_old_connections()


def _block_ms() -> int:
    """How long XREADGROUP blocks: well inside the socket timeout. (Equal to it, with the default 1 s,
    the reply and the timeout raced: a consumer then kept logging timeouts and sleeping between reads.)"""
    return max(1, min(BLOCK_MS, int(conf.socket_timeout * 1000 / 2)))


class GroupConsumer:
    """The consumer-group loops of one worker process."""

    def __init__(self, handlers: dict[str, list[Any]], consumer: str | None = None) -> None:
        self.handlers = handlers
        self.consumer = consumer_name(consumer)
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = False
        self.handled = 0
        self.dead_lettered = 0
        self.trimmed_unread = 0  # entries cut by STREAM_HARD_MAXLEN before this worker's groups read them
        #: Sync handler calls given up on (HANDLER_TIMEOUT, or stop) whose threads may still be running.
        self.abandoned = 0
        self._logged: dict[str, tuple[float, int]] = {}

    async def start(self) -> None:
        """Create the groups (at the stream's end when new), then start one loop per handler."""
        conn = get_redis_client().aredis
        for channel, handlers in self.handlers.items():
            for handler in handlers:
                await self._ensure_group(conn, channel, handler, "$")
                self._tasks.append(asyncio.get_running_loop().create_task(
                    self._consume(channel, handler), name=f"group:{group_name(handler)}"))

    async def stop(self) -> None:
        """Cancel the loops, and also tell them to stop: a cancellation can be swallowed (Python 3.11's
        ``asyncio.wait_for``, which redis-py sends every command through, returns the result when the
        cancel and the reply arrive together; so does a handler that catches it), and a loop that lost its
        cancel must still end at its next read. Bounded like the Pub/Sub loop's stop."""
        self._stopping = True
        for task in self._tasks:
            task.cancel()
        if self._tasks:
            _, stuck = await asyncio.wait(self._tasks, timeout=conf.shutdown_timeout)
            for task in stuck:
                logger.warning("Consumer loop %s did not stop within %s s; abandoned.", task.get_name(),
                               conf.shutdown_timeout)
        self._tasks.clear()

    async def _ensure_group(self, conn: Any, channel: str, handler: Any, start: str) -> None:
        try:
            await conn.xgroup_create(streams.keys(channel)[0], group_name(handler), id=start, mkstream=True)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    async def _consume(self, channel: str, handler: Any) -> None:
        stream = streams.keys(channel)[0]
        group = group_name(handler)
        cursor = "0"  # our own pending entries first: received before a crash, never acknowledged
        failing = False
        next_claim = next_reset_check = 0.0
        loop = asyncio.get_running_loop()
        while not self._stopping:
            try:
                conn: Any = get_redis_client().aredis
                if loop.time() >= next_reset_check:
                    next_reset_check = loop.time() + RESET_CHECK_INTERVAL
                    await self._check_trimmed(conn, channel, group, handler)
                if loop.time() >= next_claim:
                    # Entries a dead replica received and never acknowledged: ours after CLAIM_IDLE.
                    next_claim = loop.time() + conf.claim_idle / 2
                    claimed = await conn.xautoclaim(stream, group, self.consumer, int(conf.claim_idle * 1000),
                                                    start_id="0-0", count=READ_COUNT)
                    for entry_id, fields in claimed[1]:
                        await self._handle(conn, stream, group, channel, handler, entry_id, fields)
                reply: Any = await conn.xreadgroup(group, self.consumer, {stream: cursor}, count=READ_COUNT,
                                              block=_block_ms() if cursor == ">" else None)
                if failing:
                    failing = False
                    logger.info("Consumer group %s reads %r again.", group, channel)
                entries = reply[0][1] if reply else []
                if not entries:
                    next_reset_check = 0.0
                    # Idle: look at our own pending entries once before blocking again. A reply can be lost
                    # after Redis delivered it (a Cluster client retries a read that timed out on a starved
                    # event loop), leaving the entry pending to us and unseen until XAUTOCLAIM, CLAIM_IDLE
                    # later; this finds it within one block.
                    cursor = ">" if cursor == "0" else "0"
                    continue
                for entry_id, fields in entries:
                    if self._stopping:  # the rest stays pending: ours first on the next start
                        break
                    await self._handle(conn, stream, group, channel, handler, entry_id, fields)
            except asyncio.CancelledError:
                raise
            except redis.ResponseError as exc:
                if "NOGROUP" not in str(exc):
                    raise
                # The stream and its groups are gone (Redis lost its data): start over from what is there,
                # and say so: events published before the loss may never arrive.
                logger.warning("Consumer group %s was lost with %r's stream (Redis lost its data); recreating "
                               "it and sending stream_reset.", group, channel)
                await self._ensure_group(get_redis_client().aredis, channel, handler, "0")
                cursor = "0"
                await stream_reset.asend(sender=GroupConsumer, channel=channel, group=group, handler=handler.func)
            except REDIS_ERRORS as exc:
                if not failing:
                    failing = True
                    logger.warning("Consumer group %s cannot read %r (%s); retrying.", group, channel, exc)
                # Whatever was received and not acknowledged is retried first, so the channel keeps its order.
                cursor = "0"
                await asyncio.sleep(0.5)

    async def _check_trimmed(self, conn: Any, channel: str, group: str, handler: Any) -> None:
        """STREAM_HARD_MAXLEN cut entries this group had not acknowledged (streams.TRIM marks it): say so, at
        ERROR, and send ``stream_reset`` (invalidation then drops the channel's templates by pattern)."""
        meta = streams.keys(channel)[1]
        lost = await conn.hget(meta, f"reset:{group}")
        if lost is None:
            return
        await conn.hdel(meta, f"reset:{group}")
        self.trimmed_unread += int(lost)
        logger.error("%s event(s) of %r were trimmed (STREAM_HARD_MAXLEN) before consumer group %s acknowledged "
                     "them; sending stream_reset.", int(lost), channel, group)
        await stream_reset.asend(sender=GroupConsumer, channel=channel, group=group, handler=handler.func)

    async def _handle(self, conn: Any, stream: str, group: str, channel: str, handler: Any,
                      entry_id: bytes, fields: dict[bytes, bytes]) -> None:
        if not fields:  # trimmed away while pending: nothing left to deliver
            await conn.xack(stream, group, entry_id)
            return
        data = decode_or_undecodable(fields.get(b"d", b""))
        event_id = fields.get(b"o", entry_id).decode()
        if data is UNDECODABLE:
            logger.error("Entry %s of %r is not JSON; dead-lettered.", entry_id, channel)
            await self._dead_letter(conn, channel, group, entry_id, fields, "not JSON")
            await conn.xack(stream, group, entry_id)
            return
        if isinstance(data, dict):
            data.setdefault("_position", {"offset": int(entry_id.split(b"-")[0])})
        args = (data, channel) if handler.wants_channel else (data,)
        timeout = conf.handler_timeout
        for attempt in range(1, conf.max_deliveries + 1):
            started = asyncio.get_running_loop().time()
            try:
                try:
                    async with asyncio.timeout(timeout):
                        if handler.once:  # handler.func: not handler.call's span, so it gets one here
                            with tracing.span(f"{channel} process", data.get("_meta") if isinstance(data, dict)
                                              else None, "consumer", **{"code.function": handler.name}):
                                await sync_to_async(_run_once, thread_sensitive=False)(group, event_id,
                                                                                       handler.func, args)
                        else:
                            await handler.call(*args)
                except (asyncio.CancelledError, TimeoutError):
                    if handler.once or handler.sync:
                        self.abandoned += 1  # its thread runs on; nothing can stop a sync call
                    raise
                counters.observe(("handler", channel, handler.name), asyncio.get_running_loop().time() - started)
                break
            except asyncio.CancelledError:
                raise
            except REDIS_ERRORS as exc:
                if not await self._redis_answers(conn):
                    # The worker's own Redis is down: not the event's fault. It stays pending, costs no
                    # attempt, and is retried in order once Redis is back.
                    raise
                reason = repr(exc)  # the handler's own Redis call failed: its failure, like any other
            except TimeoutError:
                reason = f"took longer than HANDLER_TIMEOUT ({timeout} s)"
                if handler.once or handler.sync:
                    reason += "; its thread was abandoned and may still finish"
            except Exception as exc:
                reason = repr(exc)
            counters.observe(("handler", channel, handler.name), asyncio.get_running_loop().time() - started)
            counters.incr(("handler_errors", channel, handler.name))
            if self._should_log(channel):
                logger.error("Handler %s failed on event %s of %r (attempt %d of %d): %s", handler.name,
                             event_id, channel, attempt, conf.max_deliveries, reason,
                             exc_info=not reason.startswith("took longer"))
            if attempt == conf.max_deliveries:
                await self._dead_letter(conn, channel, group, entry_id, fields, reason)
                break
            await asyncio.sleep(min(RETRY_BASE * 2**attempt, 2.0))
        await conn.xack(stream, group, entry_id)
        self.handled += 1

    async def _redis_answers(self, conn: Any) -> bool:
        try:
            await conn.ping()
        except REDIS_ERRORS:
            return False
        return True

    def _should_log(self, channel: str) -> bool:
        """At most ``LOG_BURST`` failure lines per channel per minute (a stuck channel logged ~390 a minute)."""
        now = asyncio.get_running_loop().time()
        start, count = self._logged.get(channel, (now, 0))
        if now - start >= 60:
            start, count = now, 0
        self._logged[channel] = (start, count + 1)
        if count == LOG_BURST:
            logger.error("Handler failures on %r are logged at most %d times a minute; more are counted only.",
                         channel, LOG_BURST)
        return count < LOG_BURST

    async def _dead_letter(self, conn: Any, channel: str, group: str, entry_id: bytes, fields: dict[bytes, bytes],
                           reason: str) -> None:
        """Copy the entry to the dead-letter stream with the group that gave up on it (replay puts it back
        into that group only: operations.dead_letters) and why."""
        self.dead_lettered += 1
        counters.incr(("dead_lettered", channel))
        await conn.xadd(dead_letter_key(channel), {**fields, b"entry": entry_id, b"group": group.encode(),
                                                   b"reason": reason.encode()},
                        maxlen=conf.stream_maxlen, approximate=True)
        logger.error("Event %s of %r moved to the dead-letter stream %s (%s).",
                     fields.get(b"o", entry_id).decode(), channel, dead_letter_key(channel), reason)
