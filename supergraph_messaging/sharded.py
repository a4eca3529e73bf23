"""Sharded Pub/Sub on a Cluster (``SHARDED_CHANNELS``): those exact channels live on the node of their slot.

A plain ``PUBLISH`` crosses the cluster bus to every node, so every message
costs every node; ``SPUBLISH`` stays on the primary that owns the channel's
slot (and its replicas), and Pub/Sub grows with the shards. The price is on
the subscriber: one connection per primary that owns a subscribed channel,
and when a slot moves (a failover, a resharding) Redis ends its
subscriptions there with a ``sunsubscribe`` nobody asked for. Such a loss,
like a dead connection, ends the subscriber's whole connection: its usual
reconnect reloads the slot map, subscribes everything again and sends
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
from redis.asyncio.client import PubSub

from . import topology
from .connection import REDIS_ERRORS, RedisClient
from .keys import key_slot

logger = logging.getLogger("supergraph_messaging.pubsub")

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
            client = topology.node_async_client(self._client.url, host, port, **self._kwargs)
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
