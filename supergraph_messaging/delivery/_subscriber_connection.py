"""A subscriber's connection to Redis: Pub/Sub, and sharded Pub/Sub on a Cluster.

Sharded Pub/Sub (``SHARDED_CHANNELS``): those exact channels live on the
node of their slot. A plain ``PUBLISH`` crosses the cluster bus to every
node, so every message costs every node; ``SPUBLISH`` stays on the primary
that owns the channel's slot (and its replicas), and Pub/Sub grows with the
shards. The price is on the subscriber: one connection per primary that owns
a subscribed channel, and when a slot moves (a failover, a resharding) Redis
ends its subscriptions there with a ``sunsubscribe`` nobody asked for. Such a
loss, like a dead connection, ends the subscriber's whole connection: its
usual reconnect reloads the slot map, subscribes everything again and sends
``reconnected`` (WebSocket clients get ``gap``), so there is one recovery
path, not two. Order holds per channel. Redis has no sharded pattern
subscription: a glob subscriber never sees a sharded channel.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any, cast

import redis
import redis.asyncio as aioredis
from redis._parsers.hiredis import NOT_ENOUGH_DATA, _AsyncHiredisParser
from redis.asyncio.client import PubSub

from supergraph_messaging.conf import conf
from supergraph_messaging.redis.client import RedisClient, get_redis_client, pubsub_kwargs
from supergraph_messaging.redis.cluster import node_async_client
from supergraph_messaging.redis.errors import REDIS_ERRORS
from supergraph_messaging.redis.keys import full_channel, is_glob, is_sharded, key_slot

logger = logging.getLogger("supergraph_messaging.pubsub")

#: Seconds a stop waits for a receive loop (the subscriber's, a shard reader's) and for closing a connection.
STOP_TIMEOUT = 5.0


class SlotMoved(redis.exceptions.ConnectionError):
    """Redis ended a shard subscription: the channel's slot is served elsewhere now."""


class ShardedReaders:
    """``SSUBSCRIBE`` connections of one subscriber, one per primary, each read by a task of its own."""

    def __init__(self, client: RedisClient, kwargs: dict[str, Any],
                 on_message: Callable[[dict[str, Any]], Awaitable[None]],
                 on_lost: Callable[[BaseException], None]) -> None:
        self._client = client
        self._kwargs = kwargs
        self._on_message = on_message
        self._on_lost = on_lost
        self._nodes: dict[str, tuple[Any, PubSub, asyncio.Task[None]]] = {}
        self._where: dict[str, str] = {}  # channel (full name) -> node name
        self._leaving: set[str] = set()
        self._closing = False

    async def load_slots(self) -> None:
        """A fresh slot map: after a loss, the one redis-py holds may still name the dead node."""
        cluster: Any = self._client.aredis
        await cluster.initialize()
        try:
            await cluster.nodes_manager.initialize()
        except redis.exceptions.RedisClusterException as exc:
            raise redis.exceptions.ConnectionError(str(exc)) from exc

    async def subscribe(self, channels: list[str]) -> None:
        """``SSUBSCRIBE`` full channel names on their slots' primaries (one command per slot: a command
        naming channels of two slots is refused with ``CROSSSLOT``)."""
        nodes_manager = self._client.aredis.nodes_manager  # type: ignore[attr-defined]
        by_slot: dict[int, list[str]] = {}
        for channel in channels:
            self._leaving.discard(channel)
            by_slot.setdefault(key_slot(channel), []).append(channel)
        for slot, in_slot in by_slot.items():
            node = nodes_manager.get_node_from_slot(slot)
            pubsub = self._pubsub(node.name, node.host, node.port)
            await pubsub.ssubscribe(*in_slot)
            for channel in in_slot:
                self._where[channel] = node.name

    async def unsubscribe(self, channels: list[str]) -> None:
        for channel in channels:
            name = self._where.pop(channel, None)
            if name is not None and name in self._nodes:
                self._leaving.add(channel)
                await self._nodes[name][1].sunsubscribe(channel)

    def _pubsub(self, name: str, host: str, port: int) -> PubSub:
        entry = self._nodes.get(name)
        if entry is None:
            client = node_async_client(self._client.url, host, port, **self._kwargs)
            pubsub = client.pubsub()
            task = asyncio.get_running_loop().create_task(self._read(name, pubsub), name=f"sharded:{name}")
            entry = self._nodes[name] = (client, pubsub, task)
        return entry[1]

    async def _read(self, name: str, pubsub: PubSub) -> None:
        try:
            while not self._closing:
                if not pubsub.subscribed:
                    await asyncio.sleep(0.05)
                    continue
                message = await pubsub.get_message(timeout=1.0)
                if message is None:
                    continue
                if message["type"] == "sunsubscribe":
                    channel = message["channel"].decode()
                    if channel in self._leaving:
                        self._leaving.discard(channel)
                        continue
                    raise SlotMoved(f"{name} no longer serves {channel!r} (its slot moved)")
                await self._on_message(message)
        except asyncio.CancelledError:
            raise
        except REDIS_ERRORS as exc:
            if not self._closing:
                self._on_lost(exc)

    async def close(self) -> None:
        self._closing = True
        nodes, self._nodes = self._nodes, {}
        tasks = [task for _client, _pubsub, task in nodes.values()]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=STOP_TIMEOUT)
        for client, pubsub, _task in nodes.values():
            with contextlib.suppress(*REDIS_ERRORS):
                await cast(Any, pubsub).aclose()  # untyped before redis-py 8.2
                await client.aclose()


class SubscriberConnection:
    """One subscriber's connection to Redis: a Pub/Sub connection for exact channels (``SUBSCRIBE``) and
    globs (``PSUBSCRIBE``) and, for ``SHARDED_CHANNELS`` on a Cluster, :class:`ShardedReaders`.

    A failed command closes it; the subscriber's receive loop sees it closed and opens a new one, which
    subscribes everything again: one recovery path for every loss.
    """

    def __init__(self, url: str | None, on_message: Callable[[dict[str, Any]], Awaitable[None]]) -> None:
        self._url = url
        self._on_message = on_message
        self._lock = asyncio.Lock()
        self._pubsub: PubSub | None = None
        self._redis: aioredis.Redis | None = None
        self._sharded: ShardedReaders | None = None
        self._sharded_lost: BaseException | None = None
        #: The connection's hiredis parser, read directly by :meth:`buffered` (None: not possible).
        self._parser: Any = None
        #: A reply :meth:`buffered` took that is no message: :meth:`get_message` gives it to redis-py.
        self._stashed: Any = None
        #: Open and subscribed (False from a loss until the next open).
        self.live = False

    @property
    def closed(self) -> bool:
        return self._pubsub is None

    async def open(self, channels: list[str]) -> None:
        """Connect and subscribe ``channels``; raises :class:`RedisUnavailable` (closed again) if Redis fails."""
        async with self._lock:
            client = get_redis_client(self._url)
            self._redis = client.new_pubsub_client()
            pubsub = self._redis.pubsub()
            self._pubsub = pubsub
            self._sharded_lost = None
            try:
                await self._redis.ping()  # an unreachable Redis fails start() here
                if client.cluster and conf.sharded_channels:
                    self._sharded = ShardedReaders(client, pubsub_kwargs(), self._on_message, self._shard_lost)
                    await self._sharded.load_slots()
                await self._send_subscribe(pubsub, channels)
                self._parser = _direct_parser(pubsub)
                self._stashed = None
                self.live = True
            except REDIS_ERRORS as exc:
                await self.close()
                raise client.unavailable(exc) from exc
            except BaseException:
                await self.close()
                raise

    def buffered(self) -> dict[str, Any] | None:
        """The next message if it has been read off the socket already; else None (then await
        :meth:`get_message`).

        Under load one socket read brings many messages, and redis-py's ``get_message`` spends an
        await, a timeout's timer, its retry wrapper and a reply parse on each (about four fifths of
        a message's cost to a handler). Here a complete ``message`` or ``pmessage`` reply is taken
        from hiredis's buffer at once. Anything else (a confirmation, a health-check pong, an error)
        is kept for :meth:`get_message` to hand to redis-py, which keeps its subscription state.
        """
        parser = self._parser
        if parser is None or self._stashed is not None or self._sharded_lost is not None or not parser._connected:
            return None
        response = parser._reader.gets()
        if response is NOT_ENOUGH_DATA:
            return None
        if isinstance(response, list) and response:  # RESP2's array or RESP3's push (a list too)
            kind = response[0]
            if (kind == b"message" or kind == "message") and len(response) == 3:
                return {"type": "message", "pattern": None, "channel": response[1], "data": response[2]}
            if (kind == b"pmessage" or kind == "pmessage") and len(response) == 4:
                return {"type": "pmessage", "pattern": response[1], "channel": response[2], "data": response[3]}
        self._stashed = response
        return None

    def get_message(self) -> Awaitable[dict[str, Any] | None]:
        """To await: the next message or confirmation, None after a quiet while; raises when a shard was lost.

        A plain function returning redis-py's own awaitable: one coroutine frame less per message.
        """
        pubsub = self._pubsub
        assert pubsub is not None
        if self._sharded_lost is not None:
            raise self._sharded_lost
        if self._stashed is not None:
            response, self._stashed = self._stashed, None
            return _handled(pubsub, response)
        if not pubsub.subscribed:
            return asyncio.sleep(0.05)
        # With shard connections beside it, look at their health at least every 0.25 s.
        message: Awaitable[dict[str, Any] | None] = pubsub.get_message(timeout=1.0 if self._sharded is None else 0.25)
        return message

    async def subscribe(self, channels: list[str]) -> None:
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
                await self.close()

    async def unsubscribe(self, channels: list[str], wanted: Callable[[str], bool]) -> None:
        """Unsubscribe ``channels``, but not those ``wanted`` again meanwhile."""
        async with self._lock:
            pubsub = self._pubsub
            channels = [c for c in channels if not wanted(c)]
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
                await self.close()

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

    def _shard_lost(self, exc: BaseException) -> None:
        """A shard connection died or its slot moved: the receive loop reconnects everything."""
        self._sharded_lost = exc

    async def close(self) -> None:
        self.live = False
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


def _direct_parser(pubsub: PubSub) -> Any:
    """The hiredis parser of ``pubsub``'s connection when :meth:`SubscriberConnection.buffered` may read it:
    redis-py's hiredis parser, and under RESP3 (redis-py 8's default) its own Pub/Sub push handler,
    which hands a message on unchanged."""
    conn = pubsub.connection
    parser = getattr(conn, "_parser", None)
    if conn is None or type(parser) is not _AsyncHiredisParser or getattr(parser, "_reader", None) is None:
        return None
    if not hasattr(parser, "_connected"):
        return None
    if str(getattr(conn, "protocol", 2)) != "2" and (
            getattr(parser, "pubsub_push_handler_func", None) != parser.handle_pubsub_push_response):
        return None
    return parser


async def _handled(pubsub: PubSub, response: Any) -> dict[str, Any] | None:
    """What redis-py's ``get_message`` makes of a reply :meth:`SubscriberConnection.buffered` took."""
    if isinstance(response, redis.exceptions.ConnectionError):
        raise response
    if isinstance(response, list) and response and isinstance(response[0], redis.exceptions.ConnectionError):
        raise response[0]
    if response in pubsub.health_check_response:
        return None
    message: dict[str, Any] | None = await cast(Any, pubsub).handle_message(response)
    return message
