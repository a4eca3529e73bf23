"""The handlers of a subscriber's channels: who handles a channel, and how they run.

Sync handlers may block (ORM, HTTP): they run on threads, at most
``HANDLER_CONCURRENCY`` at a time, each call with fresh database connections;
async ones run on the loop; each call is bounded by ``HANDLER_TIMEOUT``. The
receive loop only decodes and queues: each channel has its own queue and
worker task (:class:`HandlerQueues`), so order within a channel is kept, one
slow handler never delays another channel or the reading of the socket, and
on shutdown the queues are drained before the worker exits.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import close_old_connections

from supergraph_messaging.conf import conf
from supergraph_messaging.redis.keys import is_glob

logger = logging.getLogger("supergraph_messaging.pubsub")

HandlerFunc = Callable[..., Any]


def _wants_channel(func: HandlerFunc) -> bool:
    try:
        params = list(inspect.signature(func).parameters.values())
    except (TypeError, ValueError):
        return False
    positional = [
        p
        for p in params
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.VAR_POSITIONAL)
    ]
    return len(positional) >= 2 or any(p.kind == p.VAR_POSITIONAL for p in positional)


class Handler:
    """One registered function, and how it is called (``once``: see :mod:`.consumer_groups`)."""

    __slots__ = ("call", "func", "name", "once", "sync", "wants_channel")

    def __init__(self, func: HandlerFunc, once: bool = False) -> None:
        self.func = func
        self.once = once
        self.name = f"{getattr(func, '__module__', '?')}.{getattr(func, '__qualname__', repr(func))}"
        self.wants_channel = _wants_channel(func)
        self.sync = not inspect.iscoroutinefunction(func)
        if not self.sync:
            self.call: Callable[..., Awaitable[Any]] = func
        else:
            # Sync handlers may block (ORM, HTTP): run them off the event loop, in a pool of
            # threads (bounded by HANDLER_CONCURRENCY), each call with fresh DB connections.
            self.call = sync_to_async(_with_fresh_db_connections(func), thread_sensitive=False)


def _with_fresh_db_connections(func: HandlerFunc) -> HandlerFunc:
    """Run ``func`` as Channels runs ORM code (``database_sync_to_async``).

    A worker lives for days: without ``close_old_connections`` around each
    call, a database restart would leave it holding a dead connection.
    """

    if not settings.configured:  # a script without Django has no database to look after
        return func

    @functools.wraps(func)
    def inner(*args: Any) -> Any:
        close_old_connections()
        try:
            return func(*args)
        finally:
            close_old_connections()

    return inner


class Handlers:
    """channel (or glob) -> its handlers, and running them for one message."""

    def __init__(self) -> None:
        self.by_channel: dict[str, list[Handler]] = {}
        self.slots = asyncio.Semaphore(conf.handler_concurrency)
        #: Handler calls that raised or timed out.
        self.errors = 0
        #: Messages skipped because they were not JSON.
        self.malformed = 0

    def add(self, channel: str, func: HandlerFunc, once: bool = False) -> bool:
        """Register ``func``; True when ``channel`` had no handler (it is to be subscribed)."""
        if once and inspect.iscoroutinefunction(func):
            raise TypeError(f"@redis_subscribe({channel!r}, once=True) needs a sync handler: its effect and the "
                            f"record that it happened share one database transaction ({func!r}).")
        new = channel not in self.by_channel
        self.by_channel.setdefault(channel, []).append(Handler(func, once=once))
        return new

    def remove(self, channel: str, func: HandlerFunc) -> bool:
        """Drop ``func``; True when it was ``channel``'s last handler (it is to be unsubscribed)."""
        handlers = self.by_channel.get(channel)
        if not handlers:
            return False
        handlers[:] = [h for h in handlers if h.func != func]
        if handlers:
            return False
        del self.by_channel[channel]
        return True

    def names(self) -> dict[str, list[str]]:
        """channel -> the dotted names of its handlers (for the AsyncAPI document)."""
        return {channel: [h.name for h in handlers] for channel, handlers in self.by_channel.items()}

    def take_exact(self, keep: tuple[str, ...] = ()) -> dict[str, list[Handler]]:
        """Remove and return the handlers of exact (non-glob) channels, except ``keep``."""
        taken = {c: h for c, h in self.by_channel.items() if not is_glob(c) and c not in keep}
        for channel in taken:
            del self.by_channel[channel]
        return taken

    async def run(self, key: str, channel: str, data: Any) -> None:
        """Call ``key``'s handlers with one message, in order; a failure or a timeout is logged and counted."""
        timeout = conf.handler_timeout
        for handler in self.by_channel.get(key, ()):
            try:
                call = handler.call(data, channel) if handler.wants_channel else handler.call(data)
                # asyncio.timeout, not wait_for: wait_for wraps every call in a task of its own, which
                # cost a third of the subscriber's throughput.
                if handler.sync:
                    async with self.slots, asyncio.timeout(timeout):
                        await call
                else:
                    async with asyncio.timeout(timeout):
                        await call
            except asyncio.CancelledError:
                raise
            except TimeoutError:
                self.errors += 1
                logger.error("Handler %s took longer than HANDLER_TIMEOUT (%s s) on a message from %r; its "
                             "channel moves on%s.", handler.name, timeout, channel,
                             " (a sync handler keeps running in its thread)" if handler.sync else "")
            except Exception:
                self.errors += 1
                logger.exception("Handler %s failed on a message from %r.", handler.name, channel)


Runner = Callable[[str, str, Any], Awaitable[None]]

#: Log a channel's drops at most this often (seconds).
DROP_LOG_INTERVAL = 1.0


class HandlerRegistry:
    """The registering half of a subscriber (:class:`~.subscriber.RedisSubscriber`): channel -> handlers,
    with a hook for a channel's first handler and one for its last."""

    def __init__(self) -> None:
        self.handlers = Handlers()
        self._reconnect_hooks: list[HandlerFunc] = []

    def channel_added(self, channel: str) -> None:
        """Hook: ``channel`` got its first handler (a running subscriber subscribes it)."""

    def channel_removed(self, channel: str) -> None:
        """Hook: ``channel`` lost its last handler (a running subscriber unsubscribes it)."""

    def on(self, channel: str, once: bool = False) -> Callable[[HandlerFunc], HandlerFunc]:
        """Decorator: call the function with each message's payload.

        ``once=True`` (durable delivery): the handler's effect happens once per
        event, even when the event is delivered twice (see :mod:`.consumer_groups`).
        """

        def decorator(func: HandlerFunc) -> HandlerFunc:
            self.add_handler(channel, func, once=once)
            return func

        return decorator

    def add_handler(self, channel: str, func: HandlerFunc, once: bool = False) -> None:
        if self.handlers.add(channel, func, once):
            self.channel_added(channel)

    def remove_handler(self, channel: str, func: HandlerFunc) -> None:
        """Drop a handler; the channel is unsubscribed when its last handler goes."""
        if self.handlers.remove(channel, func):
            self.channel_removed(channel)

    def on_reconnect(self, func: HandlerFunc) -> HandlerFunc:
        """Register a hook (sync or async, no arguments) run after each reconnect."""
        self._reconnect_hooks.append(func)
        return func

    @property
    def malformed(self) -> int:
        """Messages skipped because they were not JSON."""
        return self.handlers.malformed

    @property
    def handler_errors(self) -> int:
        """Handler calls that raised or timed out."""
        return self.handlers.errors

    @property
    def channels(self) -> list[str]:
        return list(self.handlers.by_channel)

    def handler_names(self) -> dict[str, list[str]]:
        """channel -> the dotted names of its handlers (for the AsyncAPI document)."""
        return self.handlers.names()

    def take_exact_handlers(self, keep: tuple[str, ...] = ()) -> dict[str, list[Handler]]:
        """Remove and return the handlers of exact (non-glob) channels, except ``keep``.

        Durable delivery serves them from consumer groups instead of Pub/Sub;
        call before :meth:`start`.
        """
        return self.handlers.take_exact(keep)


class HandlerQueues:
    """One ordered queue and worker task per channel, bounded in total (``WORKER_QUEUE_SIZE``): a slow
    handler delays its own channel only, and a full queue drops loudly, naming the channel."""

    def __init__(self, run: Runner, limit: int) -> None:
        self._run = run
        self.limit = limit
        self._queues: dict[str, asyncio.Queue[tuple[str, Any]]] = {}
        self._workers: dict[str, asyncio.Task[None]] = {}
        self._queued = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self.dropped: dict[str, int] = {}
        self._drop_logged: dict[str, float] = {}

    @property
    def queued(self) -> int:
        """Messages received and not yet handled (queued or running)."""
        return self._queued

    def put(self, key: str, channel: str, data: Any) -> int:
        """Queue a message for ``key``'s handlers; returns the channel's queue length (0: dropped,
        counted and logged because ``WORKER_QUEUE_SIZE`` messages were already waiting)."""
        if self._queued >= self.limit:
            self._drop(channel)
            return 0
        queue = self._queues.get(key)
        if queue is None:
            queue = self._queues[key] = asyncio.Queue()
            self._workers[key] = asyncio.get_running_loop().create_task(self._work(queue), name=f"handlers:{key}")
        self._queued += 1
        self._idle.clear()
        queue.put_nowait((channel, data))
        return queue.qsize()

    def _drop(self, channel: str) -> None:
        count = self.dropped[channel] = self.dropped.get(channel, 0) + 1
        now = time.monotonic()
        if now - self._drop_logged.get(channel, 0.0) >= DROP_LOG_INTERVAL:
            self._drop_logged[channel] = now
            logger.error(
                "Dropped a message on %r (%d dropped on it so far): %d messages are already waiting for "
                "handlers (WORKER_QUEUE_SIZE). A handler is too slow for its channel's rate.",
                channel, count, self._queued)

    async def _work(self, queue: asyncio.Queue[tuple[str, Any]]) -> None:
        key = asyncio.current_task().get_name().removeprefix("handlers:")  # type: ignore[union-attr]
        while True:
            channel, data = await queue.get()
            try:
                await self._run(key, channel, data)
            finally:
                self._queued -= 1
                if not self._queued:
                    self._idle.set()

    async def drain(self, timeout: float) -> bool:
        """Wait until every received message was handled; True if that happened within ``timeout``."""
        try:
            async with asyncio.timeout(timeout):
                await self._idle.wait()
        except TimeoutError:
            logger.error("Stopping with %d message(s) still unhandled after %.0f s.", self._queued, timeout)
            return False
        return True

    async def close(self) -> None:
        workers = list(self._workers.values())
        for worker in workers:
            worker.cancel()
        for worker in workers:
            try:
                await worker
            except asyncio.CancelledError:
                pass
        self._workers.clear()
        self._queues.clear()
        self._queued = 0
        self._idle.set()
