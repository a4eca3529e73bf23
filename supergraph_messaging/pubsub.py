"""Pub/Sub: publish JSON, and a subscriber that survives everything but ``stop()``.

The receive loop follows channels_redis: errors are logged and the loop goes
on, a lost connection is re-established with backoff and every channel is
resubscribed, cancellation is re-raised, and ``stop()`` closes explicitly.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
import signal
import threading
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, cast

import redis.asyncio as aioredis
from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import close_old_connections
from redis.asyncio.client import PubSub

from . import serialization
from .conf import conf
from .connection import REDIS_ERRORS, get_redis_client, pubsub_kwargs
from .dispatch import ChannelDispatcher
from .keys import full_channel, is_glob, is_sharded
from .sharded import ShardedReaders
from .signals import reconnected

logger = logging.getLogger("supergraph_messaging.pubsub")
#: Past this many queued messages the reader yields to the handlers only every this many messages.
YIELD_BACKLOG = 256
#: Seconds stop() waits for the receive loop and for closing its connection.
STOP_TIMEOUT = 5.0

HandlerFunc = Callable[..., Any]


def redis_publish(channel: str, data: Any, url: str | None = None, durable: bool | None = None) -> int:
    """Publish ``data`` as JSON on ``channel``; returns the receiver count.

    With ``DELIVERY = "durable"`` it is appended to the channel's stream too
    (``durable=False``: fire-and-forget Pub/Sub only). Raises
    :class:`~supergraph_messaging.RedisUnavailable` when Redis cannot be
    reached: in a view, catch it (or publish through ``EventConfig``, which
    never fails a request).
    """
    return get_redis_client(url).publish(channel, data, durable)


async def aredis_publish(channel: str, data: Any, url: str | None = None, durable: bool | None = None) -> int:
    """The async twin of :func:`redis_publish`."""
    return await get_redis_client(url).apublish(channel, data, durable)


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


class _Handler:
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


class RedisSubscriber:
    """Dispatches Pub/Sub messages to handlers registered with :meth:`on`.

    One Redis connection for all channels; exact names use ``SUBSCRIBE``,
    globs (``camera.events.complex:*``) use ``PSUBSCRIBE``.
    """

    reconnect_min_delay = 0.05
    reconnect_max_delay = 2.0

    def __init__(self, url: str | None = None, isolate_handlers: bool = True) -> None:
        """``isolate_handlers``: run each channel's handlers on their own queue and task, so a slow
        one never stalls the others or the socket (off only for handlers that never block)."""
        self._url = url
        self._isolate = isolate_handlers
        self._dispatcher: ChannelDispatcher | None = None  # made by start(): bound to its loop
        self._sync_slots = asyncio.Semaphore(conf.handler_concurrency)
        self._handlers: dict[str, list[_Handler]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None
        self._pubsub: PubSub | None = None
        self._redis: aioredis.Redis | None = None
        self._sharded: ShardedReaders | None = None  # SHARDED_CHANNELS on a Cluster
        self._sharded_lost: BaseException | None = None
        self._lock: asyncio.Lock | None = None
        self._confirmed: dict[str, asyncio.Event] = {}
        self._names: dict[bytes, str] = {}
        self._prefix = ""
        self._stopping = False
        self._live = False  # connected and subscribed: see connected
        self._connected_once = False
        self._reconnect_hooks: list[HandlerFunc] = []
        self.reconnects = 0
        #: Incremented by every successful (re)connection: who was live before a gap can tell.
        self.generation = 0
        self.malformed = 0
        self.handler_errors = 0

    # -- registration -------------------------------------------------------
    def on(self, channel: str, once: bool = False) -> Callable[[HandlerFunc], HandlerFunc]:
        """Decorator: call the function with each message's payload.

        ``once=True`` (durable delivery): the handler's effect happens once per
        event, even when the event is delivered twice (see :mod:`groups`).
        """

        def decorator(func: HandlerFunc) -> HandlerFunc:
            self.add_handler(channel, func, once=once)
            return func

        return decorator

    def add_handler(self, channel: str, func: HandlerFunc, once: bool = False) -> None:
        if once and inspect.iscoroutinefunction(func):
            raise TypeError(f"@redis_subscribe({channel!r}, once=True) needs a sync handler: its effect and the "
                            f"record that it happened share one database transaction ({func!r}).")
        new = channel not in self._handlers
        self._handlers.setdefault(channel, []).append(_Handler(func, once=once))
        if new and self._loop is not None and not self._stopping:
            self._schedule(self._subscribe([channel]))

    def remove_handler(self, channel: str, func: HandlerFunc) -> None:
        """Drop a handler; the channel is unsubscribed when its last handler goes."""
        handlers = self._handlers.get(channel)
        if not handlers:
            return
        handlers[:] = [h for h in handlers if h.func != func]
        if not handlers:
            del self._handlers[channel]
            self._confirmed.pop(channel, None)
            if self._loop is not None and not self._stopping:
                self._schedule(self._unsubscribe([channel]))

    async def _unsubscribe(self, channels: list[str]) -> None:
        assert self._lock is not None
        async with self._lock:
            pubsub = self._pubsub
            channels = [c for c in channels if c not in self._handlers]  # re-added meanwhile
            if pubsub is None or not channels:
                return
            exact, globs, sharded = self._kinds(channels)
            try:
                if sharded:
                    assert self._sharded is not None
                    await self._sharded.unsubscribe(sharded)
                if exact:
                    await pubsub.unsubscribe(*exact)
                if globs:
                    await pubsub.punsubscribe(*globs)
            except REDIS_ERRORS as exc:
                # redis-py has reconnected inside the failed command and subscribed again to every
                # channel it still held, these included, with no reconnect the receive loop could see:
                # drop that connection, and the receive loop subscribes what is wanted, as after any loss.
                logger.warning("Unsubscribing from %s failed (%s); reconnecting.", channels, exc)
                await self._close()

    def on_reconnect(self, func: HandlerFunc) -> HandlerFunc:
        """Register a hook (sync or async, no arguments) run after each reconnect."""
        self._reconnect_hooks.append(func)
        return func

    @property
    def channels(self) -> list[str]:
        return list(self._handlers)

    def handler_names(self) -> dict[str, list[str]]:
        """channel -> the dotted names of its handlers (for the AsyncAPI document)."""
        return {channel: [h.name for h in handlers] for channel, handlers in self._handlers.items()}

    def take_exact_handlers(self, keep: tuple[str, ...] = ()) -> dict[str, list[_Handler]]:
        """Remove and return the handlers of exact (non-glob) channels, except ``keep``.

        Durable delivery serves them from consumer groups instead of Pub/Sub;
        call before :meth:`start`.
        """
        taken = {c: h for c, h in self._handlers.items() if not is_glob(c) and c not in keep}
        for channel in taken:
            del self._handlers[channel]
        return taken

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    @property
    def connected(self) -> bool:
        """Running, and its connection is subscribed (not between a loss and the end of the reconnect)."""
        return self.running and self._live

    async def wait_connected(self, timeout: float) -> bool:
        """Whether the subscriber is (or within ``timeout`` seconds becomes) connected."""
        deadline = asyncio.get_running_loop().time() + timeout
        while not self.connected:
            if not self.running or asyncio.get_running_loop().time() >= deadline:
                return False
            await asyncio.sleep(0.02)
        return True

    def _schedule(self, coro: Coroutine[Any, Any, Any]) -> None:
        loop = self._loop
        assert loop is not None
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            loop.create_task(coro)
        else:
            asyncio.run_coroutine_threadsafe(coro, loop)

    # -- lifecycle ----------------------------------------------------------
    async def start(self, timeout: float = 10.0) -> None:
        """Connect, subscribe to every registered channel, and return once subscribed."""
        if self.running:
            return
        self._loop = asyncio.get_running_loop()
        self._lock = asyncio.Lock()
        self._sync_slots = asyncio.Semaphore(conf.handler_concurrency)
        if self._isolate:
            self._dispatcher = ChannelDispatcher(self._run_handlers, conf.worker_queue_size)
        self._stopping = False
        self._confirmed = {}
        await self._connect()
        self._task = self._loop.create_task(self._receive_loop(), name="RedisSubscriber")
        await self.wait_subscribed(*self._handlers, timeout=timeout)

    async def wait_subscribed(self, *channels: str, timeout: float = 10.0) -> None:
        """Wait until Redis confirmed the subscription of ``channels``."""
        for channel in channels:
            event = self._confirmed.setdefault(channel, asyncio.Event())
            async with asyncio.timeout(timeout):  # not wait_for: on 3.11 it can swallow a cancel
                await event.wait()

    async def stop(self) -> None:
        """Stop receiving, finish the messages already received (up to ``SHUTDOWN_TIMEOUT``), close."""
        self._stopping = True
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            # Bounded: a worker told to stop must stop even if a connection call ignores cancellation
            # (seen once, after Redis restarted while the worker was frozen).
            done, _ = await asyncio.wait({task}, timeout=STOP_TIMEOUT)
            if not done:
                logger.warning("The Pub/Sub receive loop did not stop within %s s; closing anyway.", STOP_TIMEOUT)
            elif not task.cancelled() and task.exception() is not None:
                logger.error("The Pub/Sub receive loop had failed.", exc_info=task.exception())
        try:
            async with asyncio.timeout(STOP_TIMEOUT):
                await self._close()
        except TimeoutError:
            logger.warning("Closing the Pub/Sub connection took longer than %s s; abandoned.", STOP_TIMEOUT)
        if self._dispatcher is not None:
            await self._dispatcher.drain(conf.shutdown_timeout)
            await self._dispatcher.close()
        self._loop = None

    @property
    def queued(self) -> int:
        """Messages received and not yet handled."""
        return self._dispatcher.queued if self._dispatcher is not None else 0

    @property
    def dropped(self) -> dict[str, int]:
        """Messages dropped per channel because ``WORKER_QUEUE_SIZE`` were already waiting."""
        return dict(self._dispatcher.dropped) if self._dispatcher is not None else {}

    def run(self) -> None:
        """Block, serving messages until SIGINT/SIGTERM (or :meth:`stop`)."""
        asyncio.run(self.serve())

    async def serve(self, stop_event: asyncio.Event | None = None) -> None:
        stop_event = stop_event or asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                loop.add_signal_handler(sig, stop_event.set)
            except (NotImplementedError, RuntimeError, ValueError):
                pass  # not the main thread: the caller stops us instead
        await self.start()
        try:
            waiter = asyncio.ensure_future(stop_event.wait())
            assert self._task is not None
            await asyncio.wait({waiter, self._task}, return_when=asyncio.FIRST_COMPLETED)
            waiter.cancel()
        finally:
            await self.stop()

    # -- connection ---------------------------------------------------------
    async def _connect(self) -> None:
        assert self._lock is not None
        async with self._lock:
            client = get_redis_client(self._url)
            self._prefix = conf.channel_prefix
            self._names = {}
            self._redis = client.new_pubsub_client()
            pubsub = self._redis.pubsub()
            self._pubsub = pubsub
            self._sharded_lost = None
            try:
                await self._redis.ping()  # an unreachable Redis fails start() here
                if client.cluster and conf.sharded_channels:
                    self._sharded = ShardedReaders(client, pubsub_kwargs(), self._dispatch, self._shard_lost)
                    await self._sharded.load_slots()
                await self._send_subscribe(pubsub, list(self._handlers))
                self.generation += 1
                self._live = True
            except REDIS_ERRORS as exc:
                await self._close()
                raise client.unavailable(exc) from exc
            except BaseException:
                await self._close()
                raise

    async def _send_subscribe(self, pubsub: PubSub, channels: list[str]) -> None:
        exact, globs, sharded = self._kinds(channels)
        if sharded:
            assert self._sharded is not None
            await self._sharded.subscribe(sharded)
        if exact:
            await pubsub.subscribe(*exact)
        if globs:
            await pubsub.psubscribe(*globs)

    def _kinds(self, channels: list[str]) -> tuple[list[str], list[str], list[str]]:
        """Full names of the exact, glob and sharded (``SHARDED_CHANNELS`` on a Cluster) channels."""
        exact: list[str] = []
        globs: list[str] = []
        sharded: list[str] = []
        for channel in channels:
            if is_glob(channel):
                globs.append(full_channel(channel))
            elif self._sharded is not None and is_sharded(channel):
                sharded.append(full_channel(channel))
            else:
                exact.append(full_channel(channel))
        return exact, globs, sharded

    async def _subscribe(self, channels: list[str]) -> None:
        assert self._lock is not None
        async with self._lock:
            pubsub = self._pubsub
            if pubsub is None:
                return  # the reconnect will subscribe everything
            try:
                await self._send_subscribe(pubsub, channels)
            except REDIS_ERRORS as exc:
                # The connection is dead (an idle subscriber does not read, so it had not
                # noticed): drop it, and the receive loop reconnects and subscribes everything.
                logger.warning("Subscribing to %s failed (%s); reconnecting.", channels, exc)
                await self._close()

    async def _close(self) -> None:
        self._live = False
        pubsub, self._pubsub = self._pubsub, None
        client, self._redis = self._redis, None
        sharded, self._sharded = self._sharded, None
        if sharded is not None:
            await sharded.close()
        try:
            if pubsub is not None:
                await cast(Any, pubsub).aclose()  # untyped before redis-py 8.2
            if client is not None:
                await client.aclose()
        except REDIS_ERRORS:
            pass  # the connection is already gone; nothing left to release

    # -- receiving ----------------------------------------------------------
    async def _receive_loop(self) -> None:
        """Receive until stopped; a lost connection is retried with backoff (0.2 s doubling to
        ``reconnect_max_delay``), logged once when lost and once when back, not once per attempt."""
        delay = self.reconnect_min_delay
        attempts = 0
        while not self._stopping:
            try:
                if self._pubsub is None:
                    for event in self._confirmed.values():
                        event.clear()  # waiters keep their Event; the resubscription sets it again
                    await self._connect()
                    self.reconnects += 1
                    delay = self.reconnect_min_delay
                    logger.info("Resubscribed to %d channel(s) after a reconnect (%d attempt(s)).",
                                len(self._handlers), attempts)
                    attempts = 0
                    self._loop.create_task(self._after_reconnect())  # type: ignore[union-attr]
                pubsub = self._pubsub
                assert pubsub is not None
                if self._sharded_lost is not None:
                    raise self._sharded_lost
                if not pubsub.subscribed:
                    await asyncio.sleep(0.05)
                    continue
                # With shard connections beside it, look at their health at least every 0.25 s.
                message = await pubsub.get_message(timeout=1.0 if self._sharded is None else 0.25)
                if message is not None:
                    await self._dispatch(message)
            except asyncio.CancelledError:
                raise
            except REDIS_ERRORS as exc:
                attempts += 1
                if attempts == 1:
                    logger.warning("Redis Pub/Sub connection lost (%s); reconnecting with backoff.", exc)
                else:
                    logger.debug("Redis Pub/Sub reconnect attempt %d failed (%s); next in %.2fs.", attempts, exc, delay)
                await self._close()
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.reconnect_max_delay)
            except Exception:
                logger.exception("Unexpected error in the Pub/Sub receive loop; continuing.")
                await asyncio.sleep(delay)

    def _shard_lost(self, exc: BaseException) -> None:
        """A shard connection died or its slot moved: the receive loop reconnects everything."""
        self._sharded_lost = exc

    async def _after_reconnect(self) -> None:
        await self.wait_subscribed(*self._handlers)
        for hook in self._reconnect_hooks:
            try:
                result = hook()
                if inspect.isawaitable(result):
                    await result
            except Exception:
                logger.exception("Reconnect hook %r failed.", hook)
        try:
            await reconnected.asend(sender=type(self), subscriber=self)
        except Exception:
            logger.exception("A 'reconnected' signal receiver failed.")

    async def _dispatch(self, message: dict[str, Any]) -> None:
        kind = message["type"]
        if kind == "message" or kind == "smessage":
            key = channel = self._name(message["channel"])
        elif kind == "pmessage":
            key = self._name(message["pattern"])
            channel = self._name(message["channel"])
        else:
            if kind in ("subscribe", "psubscribe", "ssubscribe"):
                self._confirmed.setdefault(self._name(message["channel"]), asyncio.Event()).set()
            return
        handlers = self._handlers.get(key)
        if not handlers:
            return
        try:
            data = serialization.loads(message["data"])
        except (ValueError, UnicodeDecodeError, RecursionError) as exc:
            self.malformed += 1
            logger.warning("Skipping a malformed message on %r (not JSON: %s).", channel, exc)
            return
        if self._dispatcher is not None:
            backlog = self._dispatcher.put(key, channel, data)
            if 1 < backlog <= YIELD_BACKLOG or backlog % YIELD_BACKLOG == 0:
                # A backlog: let the channel's worker run now. With data buffered, get_message does not
                # suspend, and a burst would be read whole before any handler ran (p99 7.5 ms without
                # this, measured); yielding for every message instead cost a fifth of the throughput.
                # A long backlog means a stuck or slow handler: then reading wins (Redis disconnects a
                # subscriber past 32 MB unread), and the worker gets a turn every YIELD_BACKLOG messages.
                await asyncio.sleep(0)
        else:
            await self._run_handlers(key, channel, data)

    async def _run_handlers(self, key: str, channel: str, data: Any) -> None:
        timeout = conf.handler_timeout
        for handler in self._handlers.get(key, ()):
            try:
                call = handler.call(data, channel) if handler.wants_channel else handler.call(data)
                # asyncio.timeout, not wait_for: wait_for wraps every call in a task of its own, which
                # cost a third of the subscriber's throughput.
                if handler.sync:
                    async with self._sync_slots, asyncio.timeout(timeout):
                        await call
                else:
                    async with asyncio.timeout(timeout):
                        await call
            except asyncio.CancelledError:
                raise
            except TimeoutError:
                self.handler_errors += 1
                logger.error("Handler %s took longer than HANDLER_TIMEOUT (%s s) on a message from %r; its "
                             "channel moves on%s.", handler.name, timeout, channel,
                             " (a sync handler keeps running in its thread)" if handler.sync else "")
            except Exception:
                self.handler_errors += 1
                logger.exception("Handler %s failed on a message from %r.", handler.name, channel)

    def _name(self, raw: bytes) -> str:
        """Channel name without CHANNEL_PREFIX, memoised: names repeat on every message."""
        name = self._names.get(raw)
        if name is None:
            text = raw.decode()
            prefix = self._prefix
            name = text[len(prefix) :] if prefix and text.startswith(prefix) else text
            if len(self._names) < 10_000:
                self._names[raw] = name
        return name


_global: RedisSubscriber | None = None
_global_lock = threading.Lock()


def get_global_subscriber() -> RedisSubscriber:
    """The process-wide subscriber that ``@redis_subscribe`` and ``messaging_listen`` use."""
    global _global
    if _global is None:
        with _global_lock:
            if _global is None:
                _global = RedisSubscriber()
    return _global


def redis_subscribe(channel: str, once: bool = False) -> Callable[[HandlerFunc], HandlerFunc]:
    """Register the decorated function on the global subscriber (``once``: see :meth:`RedisSubscriber.on`)."""
    return get_global_subscriber().on(channel, once=once)
