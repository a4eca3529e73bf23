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
import types
from collections.abc import Awaitable, Callable, Coroutine, Generator
from typing import Any

from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import close_old_connections

from supergraph_messaging import counters, tracing
from supergraph_messaging.conf import conf
from supergraph_messaging.redis.keys import is_glob

logger = logging.getLogger("supergraph_messaging.pubsub")

HandlerFunc = Callable[..., Any]


def _wants_channel(func: HandlerFunc) -> bool:
    try:
        params = list(inspect.signature(func).parameters.values())
    except (TypeError, ValueError):
        return False
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.VAR_POSITIONAL)]
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
        if tracing.active():  # a span per call, the child of the message's traceparent (self.func stays)
            func = tracing.traced(func, self.name, not self.sync)
        if not self.sync:
            self.call: Callable[..., Awaitable[Any]] = func
        else:
            # Sync handlers may block (ORM, HTTP): run them off the event loop, in a pool of
            # threads (bounded by HANDLER_CONCURRENCY), each call with fresh DB connections.
            self.call = sync_to_async(_with_fresh_db_connections(func), thread_sensitive=False)


def _with_fresh_db_connections(func: HandlerFunc) -> HandlerFunc:
    """Run ``func`` as Channels runs ORM code (``database_sync_to_async``): a worker lives for days, and
    without ``close_old_connections`` around each call a database restart left it a dead connection."""

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

    def take_exact(self, keep: tuple[str, ...] = ()) -> dict[str, list[Handler]]:
        """Remove and return the handlers of exact (non-glob) channels, except ``keep``."""
        taken = {c: h for c, h in self.by_channel.items() if not is_glob(c) and c not in keep}
        for channel in taken:
            del self.by_channel[channel]
        return taken

    async def run(self, key: str, channel: str, data: Any) -> None:
        """Call ``key``'s handlers with one message, in order; a failure or a timeout is logged and counted."""
        await self._run_from(list(self.by_channel.get(key, ())), channel, data)

    def start(self, key: str, channel: str, data: Any) -> Coroutine[Any, Any, None] | None:
        """Run ``key``'s async handlers on one message as far as each goes without waiting.

        None when every one finished so (a handler that only computes, the common case: no task, no
        timer, no queue); else a coroutine that finishes the rest in order, the handler that waited
        resumed where it stopped and given ``HANDLER_TIMEOUT``, for the channel's worker to await.
        A sync handler always goes to the worker (it runs in a thread).
        """
        handlers = self.by_channel.get(key, ())
        for index, handler in enumerate(handlers):
            if handler.sync:
                return self._run_from(list(handlers[index:]), channel, data)
            awaitable = handler.call(data, channel) if handler.wants_channel else handler.call(data)
            if type(awaitable) is not types.CoroutineType:
                return self._finish(handler, awaitable, list(handlers[index + 1:]), channel, data)
            started = time.perf_counter()
            try:
                waiting_on = awaitable.send(None)
            except StopIteration:
                counters.observe(("handler", channel, handler.name), time.perf_counter() - started)
                continue
            except (Exception, asyncio.CancelledError):  # the handler's own: this is no task being cancelled
                self.failed(channel, handler)
                logger.exception("Handler %s failed on a message from %r.", handler.name, channel)
                continue
            return self._finish(handler, resumed(awaitable, waiting_on), list(handlers[index + 1:]), channel, data)
        return None

    async def _finish(self, handler: Handler, awaitable: Awaitable[Any], rest: list[Handler], channel: str,
                      data: Any) -> None:
        await self._settle(handler, channel, awaitable)
        await self._run_from(rest, channel, data)

    async def _run_from(self, handlers: list[Handler], channel: str, data: Any) -> None:
        for handler in handlers:
            await self._settle(handler, channel,
                               handler.call(data, channel) if handler.wants_channel else handler.call(data))

    async def _settle(self, handler: Handler, channel: str, call: Awaitable[Any]) -> None:
        """Await one handler's call under ``HANDLER_TIMEOUT``; a failure or a timeout is logged and counted."""
        timeout, started = conf.handler_timeout, time.perf_counter()
        try:
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
            self.failed(channel, handler)
            logger.error("Handler %s took longer than HANDLER_TIMEOUT (%s s) on a message from %r; its "
                         "channel moves on%s.", handler.name, timeout, channel,
                         " (a sync handler keeps running in its thread)" if handler.sync else "")
        except Exception:
            self.failed(channel, handler)
            logger.exception("Handler %s failed on a message from %r.", handler.name, channel)
        counters.observe(("handler", channel, handler.name), time.perf_counter() - started)

    def failed(self, channel: str, handler: Handler) -> None:
        self.errors += 1
        counters.incr(("handler_errors", channel, handler.name))


@types.coroutine
def resumed(coro: Coroutine[Any, Any, Any], waiting_on: Any) -> Generator[Any, Any, Any]:
    """Drive ``coro`` on from where its first step stopped (``waiting_on``: what that step yielded), as
    ``await`` would have: what the awaiting task sends or throws (a timeout's cancellation) goes in."""
    while True:
        try:
            sent = yield waiting_on
        except GeneratorExit:
            coro.close()
            raise
        except BaseException as exc:
            try:
                waiting_on = coro.throw(exc)
            except StopIteration as done:
                return done.value
        else:
            try:
                waiting_on = coro.send(sent)
            except StopIteration as done:
                return done.value


#: Log a channel's drops at most this often (seconds).
DROP_LOG_INTERVAL = 1.0
#: Past this many queued messages of a channel the reader gives the workers a turn only every this many.
YIELD_BACKLOG = 256


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
        return {channel: [h.name for h in handlers] for channel, handlers in self.handlers.by_channel.items()}

    def take_exact_handlers(self, keep: tuple[str, ...] = ()) -> dict[str, list[Handler]]:
        """Remove and return the handlers of exact (non-glob) channels, except ``keep``.

        Durable delivery serves them from consumer groups instead of Pub/Sub;
        call before :meth:`start`.
        """
        return self.handlers.take_exact(keep)


class _Rest(tuple[Coroutine[Any, Any, None]]):
    """A queue item: the rest of a message's handlers, started inline (see :meth:`Handlers.start`)."""


class HandlerQueues:
    """One ordered queue and worker task per channel, bounded in total (``WORKER_QUEUE_SIZE``): a slow
    handler delays its own channel only, and a full queue drops loudly, naming the channel.

    A message for a channel with nothing queued or running has its async handlers started at once,
    inline (:meth:`Handlers.start`): a handler that finishes without waiting costs no task switch, no
    timer and no queue. Only a handler that waits (or a sync one) goes to the channel's worker, and
    every later message of that channel queues behind it, so each channel keeps its order.
    """

    def __init__(self, handlers: Handlers, limit: int) -> None:
        self._handlers = handlers
        self.limit = limit
        self._queues: dict[str, asyncio.Queue[tuple[str, Any]]] = {}
        self._workers: dict[str, asyncio.Task[None]] = {}
        self._pending: dict[str, int] = {}  # per channel: queued or running
        self._queued = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self.dropped: dict[str, int] = {}
        self._drop_logged: dict[str, float] = {}

    @property
    def queued(self) -> int:
        """Messages received and not yet handled (queued or running)."""
        return self._queued

    def put(self, key: str, channel: str, data: Any) -> bool:
        """Handle a message: at once when ``key``'s handlers finish without waiting, else queued behind the
        channel's earlier ones (dropped and logged past ``WORKER_QUEUE_SIZE``). True: give the workers a
        turn before reading on. With data buffered, ``get_message`` does not suspend, and a burst would be
        read whole before a queued handler ran (p99 7.5 ms, measured); a turn per message cost a fifth of
        the throughput. So a turn while a channel has a backlog and after a drop; past YIELD_BACKLOG,
        only every YIELD_BACKLOG messages (a stuck handler: reading wins, as Redis cuts a subscriber
        32 MB behind)."""
        if not self._pending.get(key):
            rest = self._handlers.start(key, channel, data)
            if rest is None:
                return False
            backlog = self._enqueue(key, channel, _Rest((rest,)))  # started: never dropped
        elif self._queued >= self.limit:
            self._drop(channel)
            return True
        else:
            backlog = self._enqueue(key, channel, data)
        return 1 < backlog <= YIELD_BACKLOG or backlog % YIELD_BACKLOG == 0

    def _enqueue(self, key: str, channel: str, item: Any) -> int:
        queue = self._queues.get(key)
        if queue is None:
            queue = self._queues[key] = asyncio.Queue()
            self._workers[key] = asyncio.get_running_loop().create_task(self._work(queue), name=f"handlers:{key}")
        self._pending[key] = self._pending.get(key, 0) + 1
        self._queued += 1
        self._idle.clear()
        queue.put_nowait((channel, item))
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
            channel, item = await queue.get()
            try:
                if type(item) is _Rest:
                    await item[0]
                else:
                    await self._handlers.run(key, channel, item)
            finally:
                self._pending[key] -= 1
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
