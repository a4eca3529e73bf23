"""``RedisSubscriber``: Pub/Sub handlers in a process, and a receive loop that survives everything but
``stop()``.

The receive loop follows channels_redis: errors are logged and the loop goes
on, a lost connection is re-established with backoff and every channel is
resubscribed, cancellation is re-raised, and ``stop()`` closes explicitly.
The loop decodes and hands each message to :class:`.handlers.HandlerQueues`:
an idle channel's async handlers start right there, and whatever waits (or
runs in a thread) finishes on the channel's own worker, in order.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import signal
import threading
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from supergraph_messaging.conf import conf
from supergraph_messaging.delivery._subscriber_connection import STOP_TIMEOUT, SubscriberConnection
from supergraph_messaging.delivery.handlers import HandlerFunc, HandlerQueues, HandlerRegistry
from supergraph_messaging.redis import serialization
from supergraph_messaging.redis.errors import REDIS_ERRORS
from supergraph_messaging.signals import reconnected

logger = logging.getLogger("supergraph_messaging.pubsub")


class RedisSubscriber(HandlerRegistry):
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
        self._dispatcher: HandlerQueues | None = None  # made by start(): bound to its loop
        super().__init__()
        self._by_channel = self.handlers.by_channel  # the receive loop's lookup, one attribute away
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None
        self._connection: SubscriberConnection | None = None  # made by start(): bound to its loop
        self._confirmed: dict[str, asyncio.Event] = {}
        self._names: dict[bytes, str] = {}
        self._prefix = ""
        self._stopping = False
        self._connected_once = False
        self.reconnects = 0
        #: Incremented by every successful (re)connection: who was live before a gap can tell.
        self.generation = 0

    # -- the registry's hooks -------------------------------------------------
    def channel_added(self, channel: str) -> None:
        if self._loop is not None and not self._stopping:
            _schedule(self._loop, self._subscribe([channel]))

    def channel_removed(self, channel: str) -> None:
        self._confirmed.pop(channel, None)
        if self._loop is not None and not self._stopping:
            _schedule(self._loop, self._unsubscribe([channel]))

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    @property
    def connected(self) -> bool:
        """Running, and its connection is subscribed (not between a loss and the end of the reconnect)."""
        return self.running and self._connection is not None and self._connection.live

    async def wait_connected(self, timeout: float) -> bool:
        """Whether the subscriber is (or within ``timeout`` seconds becomes) connected."""
        deadline = asyncio.get_running_loop().time() + timeout
        while not self.connected:
            if not self.running or asyncio.get_running_loop().time() >= deadline:
                return False
            await asyncio.sleep(0.02)
        return True

    # -- lifecycle ----------------------------------------------------------
    async def start(self, timeout: float = 10.0) -> None:
        """Connect, subscribe to every registered channel, and return once subscribed."""
        if self.running:
            return
        self._loop = asyncio.get_running_loop()
        self._connection = SubscriberConnection(self._url, self._dispatch)
        self.handlers.slots = asyncio.Semaphore(conf.handler_concurrency)
        if self._isolate:
            self._dispatcher = HandlerQueues(self.handlers, conf.worker_queue_size)
        self._stopping = False
        self._confirmed = {}
        await self._connect()
        self._task = self._loop.create_task(self._receive_loop(), name="RedisSubscriber")
        await self.wait_subscribed(*self.handlers.by_channel, timeout=timeout)

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

    # -- the connection -------------------------------------------------------
    async def _connect(self) -> None:
        assert self._connection is not None
        self._prefix = conf.channel_prefix
        self._names = {}
        await self._connection.open(list(self.handlers.by_channel))
        self.generation += 1

    async def _subscribe(self, channels: list[str]) -> None:
        if self._connection is not None:
            await self._connection.subscribe(channels)

    async def _unsubscribe(self, channels: list[str]) -> None:
        if self._connection is not None:
            await self._connection.unsubscribe(channels, wanted=self.handlers.by_channel.__contains__)

    async def _close(self) -> None:
        if self._connection is not None:
            await self._connection.close()

    # -- receiving ----------------------------------------------------------
    async def _receive_loop(self) -> None:
        """Receive until stopped; a lost connection is retried with backoff (0.2 s doubling to
        ``reconnect_max_delay``), logged once when lost and once when back, not once per attempt."""
        delay = self.reconnect_min_delay
        attempts = 0
        while not self._stopping:
            try:
                assert self._connection is not None
                if self._connection.closed:
                    for event in self._confirmed.values():
                        event.clear()  # waiters keep their Event; the resubscription sets it again
                    await self._connect()
                    self.reconnects += 1
                    delay = self.reconnect_min_delay
                    logger.info("Resubscribed to %d channel(s) after a reconnect (%d attempt(s)).",
                                len(self.handlers.by_channel), attempts)
                    attempts = 0
                    self._loop.create_task(self._after_reconnect())  # type: ignore[union-attr]
                message = self._connection.buffered()
                if message is None:
                    message = await self._connection.get_message()
                if message is not None and (pending := self._handle(message)) is not None:
                    await pending
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

    async def _after_reconnect(self) -> None:
        await self.wait_subscribed(*self.handlers.by_channel)
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
        pending = self._handle(message)
        if pending is not None:
            await pending

    def _handle(self, message: dict[str, Any]) -> Awaitable[None] | None:
        """Decode a message and give it to its channel's handlers; returns what to await before reading
        on (the handlers themselves, without isolation; a turn for a backlog), or None."""
        kind = message["type"]
        if kind == "message" or kind == "smessage":
            key = channel = self._name(message["channel"])
        elif kind == "pmessage":
            key = self._name(message["pattern"])
            channel = self._name(message["channel"])
        else:
            if kind in ("subscribe", "psubscribe", "ssubscribe"):
                self._confirmed.setdefault(self._name(message["channel"]), asyncio.Event()).set()
            return None
        if not self._by_channel.get(key):
            return None
        try:
            data = serialization.loads(message["data"])
        except (ValueError, UnicodeDecodeError, RecursionError) as exc:
            self.handlers.malformed += 1
            logger.warning("Skipping a malformed message on %r (not JSON: %s).", channel, exc)
            return None
        queues = self._dispatcher
        if queues is None:
            return self.handlers.run(key, channel, data)
        return asyncio.sleep(0) if queues.put(key, channel, data) else None  # a turn for the channel's worker

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


def _schedule(loop: asyncio.AbstractEventLoop | None, coro: Coroutine[Any, Any, Any]) -> None:
    """Run ``coro`` on the subscriber's ``loop``, from that loop or from any thread."""
    assert loop is not None
    try:
        running = asyncio.get_running_loop()
    except RuntimeError:
        running = None
    if running is loop:
        loop.create_task(coro)
    else:
        asyncio.run_coroutine_threadsafe(coro, loop)


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
