"""A Redis Cluster: redis-py's cluster clients, connections to any node, and multi-key work split per slot.

``redis+cluster://`` names some nodes; redis-py's cluster clients discover
the rest. A Cluster refuses a command whose keys live in different slots
(``CROSSSLOT``), and a ``SCAN`` sees one node. redis-py's own multi-key
``UNLINK`` sends one round trip per slot; here the commands for every slot a
batch touches go out in one pipeline per node, and the primaries are
scanned side by side.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import redis
import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster
from redis.cluster import RedisCluster

from supergraph_messaging.redis.keys import key_slot, lease_key, version_key
from supergraph_messaging.redis.urls import _credentials, parse_cluster


class ClusterUnreachable(redis.exceptions.ConnectionError):
    """No node of the Cluster answers (redis-py says so with a bare ``RedisClusterException``)."""


def _unreachable(exc: redis.exceptions.RedisClusterException) -> BaseException:
    """A ``ConnectionError`` for "no node answers"; the exception itself otherwise (a bug to see)."""
    if isinstance(exc.__cause__, redis.exceptions.ConnectionError | redis.exceptions.TimeoutError | OSError):
        return ClusterUnreachable(str(exc))
    return exc


class Cluster(RedisCluster):
    """redis-py's cluster client, saying "unreachable" as a ``ConnectionError`` so fail-open sees it."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        try:
            super().__init__(*args, **kwargs)
        except redis.exceptions.RedisClusterException as exc:
            raise _unreachable(exc) from exc

    def execute_command(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().execute_command(*args, **kwargs)  # type: ignore[no-untyped-call]
        except redis.exceptions.RedisClusterException as exc:
            raise _unreachable(exc) from exc

    def publish(self, channel: Any, message: Any, **kwargs: Any) -> Any:
        """Every PUBLISH through one node, the client's default.

        PUBLISH has no key, and redis-py may send such a command to any
        primary (measured: a new asyncio client's first PUBLISH went to
        another node than the rest). Two publishes entering at different
        nodes can cross on the cluster bus, so one process's successive
        publishes on a channel arrived out of order (seen in CI as ``[1, 0]``).
        """
        kwargs.setdefault("target_nodes", self.DEFAULT_NODE)
        return self.execute_command("PUBLISH", channel, message, **kwargs)


class AsyncCluster(AsyncRedisCluster):
    """:class:`Cluster` for asyncio."""

    async def initialize(self, *args: Any, **kwargs: Any) -> AsyncCluster:
        try:
            await super().initialize(*args, **kwargs)
        except redis.exceptions.RedisClusterException as exc:
            raise _unreachable(exc) from exc
        return self

    async def execute_command(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return await super().execute_command(*args, **kwargs)
        except redis.exceptions.RedisClusterException as exc:
            raise _unreachable(exc) from exc

    def publish(self, channel: Any, message: Any, **kwargs: Any) -> Any:
        """As :meth:`Cluster.publish`: one node, so publishes keep their order."""
        kwargs.setdefault("target_nodes", self.DEFAULT_NODE)
        return self.execute_command("PUBLISH", channel, message, **kwargs)


def _cluster_client(url: str, kwargs: dict[str, Any], node_class: Any, cluster_class: Any) -> Any:
    """redis-py's cluster client; its ``retry`` is the count of cluster-level retries (with a fresh slot map)."""
    target = parse_cluster(url)
    ssl = {"ssl": True} if target.ssl else {}
    return cluster_class(startup_nodes=[node_class(host, port) for host, port in target.nodes],
                         require_full_coverage=False, **kwargs, **_credentials(target), **ssl)


class _NodeRing:
    """The nodes of a Cluster URL, tried in turn from the last one that answered."""

    def __init__(self, nodes: tuple[tuple[str, int], ...]) -> None:
        self.nodes = nodes
        self.start = 0

    def order(self) -> list[tuple[int, tuple[str, int]]]:
        n = len(self.nodes)
        return [((self.start + i) % n, self.nodes[(self.start + i) % n]) for i in range(n)]


class AnyNodeConnection(redis.Connection):
    """A connection to the first node of a Cluster that answers, for ``PUBLISH`` and ``SUBSCRIBE``.

    Pub/Sub needs one live node, not the slot map: a ``PUBLISH`` on any node
    reaches the subscribers on every node. Reconnecting after its node died
    tries the others, so a killed primary costs one reconnect.
    """

    def __init__(self, ring: _NodeRing, **kwargs: Any) -> None:
        super().__init__(host=ring.nodes[0][0], port=ring.nodes[0][1], **kwargs)  # type: ignore[no-untyped-call]
        self.ring = ring

    def _connect(self) -> Any:
        last: BaseException = OSError("no node")
        for index, address in self.ring.order():
            self.host, self.port = address
            try:
                sock = super()._connect()  # type: ignore[no-untyped-call]
            except OSError as exc:
                last = exc
                continue
            self.ring.start = index
            return sock
        raise last


class AnyNodeSSLConnection(AnyNodeConnection, redis.SSLConnection):
    """:class:`AnyNodeConnection` over TLS (``rediss+cluster://``)."""


class AsyncAnyNodeConnection(aioredis.Connection):
    """:class:`AnyNodeConnection` for asyncio clients."""

    def __init__(self, ring: _NodeRing, **kwargs: Any) -> None:
        super().__init__(host=ring.nodes[0][0], port=ring.nodes[0][1], **kwargs)
        self.ring = ring

    async def _connect(self) -> None:
        last: BaseException = OSError("no node")
        for index, address in self.ring.order():
            self.host, self.port = address
            try:
                await super()._connect()  # type: ignore[no-untyped-call]
            except OSError as exc:
                last = exc
                continue
            self.ring.start = index
            return
        raise last


class AsyncAnyNodeSSLConnection(AsyncAnyNodeConnection, aioredis.SSLConnection):
    """:class:`AsyncAnyNodeConnection` over TLS."""


def any_node_connection(url: str, **kwargs: Any) -> AnyNodeConnection:
    """One connection (not a client) to any live node of the Cluster ``url`` names."""
    target = parse_cluster(url)
    connection_class = AnyNodeSSLConnection if target.ssl else AnyNodeConnection
    return connection_class(_NodeRing(target.nodes), **kwargs, **_credentials(target))


def any_node_async_client(url: str, **kwargs: Any) -> aioredis.Redis:
    """An asyncio client whose connections go to any live node of the Cluster ``url`` names (Pub/Sub)."""
    target = parse_cluster(url)
    connection_class = AsyncAnyNodeSSLConnection if target.ssl else AsyncAnyNodeConnection
    pool = aioredis.ConnectionPool(connection_class=connection_class, ring=_NodeRing(target.nodes),
                                   **kwargs, **_credentials(target))
    return aioredis.Redis(connection_pool=pool)


def node_async_client(url: str, host: str, port: int, **kwargs: Any) -> aioredis.Redis:
    """An asyncio client of one node of the Cluster ``url`` names (sharded Pub/Sub: the slot's owner)."""
    target = parse_cluster(url)
    options: dict[str, Any] = {**kwargs, **_credentials(target)}
    if target.ssl:
        options["ssl"] = True
    return aioredis.Redis(host=host, port=port, **options)


SCAN_COUNT = 10_000
UNLINK_BATCH = 1_000


def by_slot(keys: Iterable[str | bytes]) -> dict[int, list[str | bytes]]:
    groups: dict[int, list[str | bytes]] = defaultdict(list)
    for key in keys:
        groups[key_slot(key)].append(key)
    return groups


def _queue_invalidations(pipe: Any, keys: list[str]) -> None:
    """Per slot: the leases first, then the values, so a fill between the two cannot write (its lease is gone)."""
    for group in by_slot(keys).values():
        pipe.execute_command("UNLINK", *[lease_key(str(k), clustered=True) for k in group],
                             *[version_key(str(k), clustered=True) for k in group])
        pipe.execute_command("UNLINK", *group)


def invalidate(conn: Any, keys: list[str]) -> int:
    """Delete ``keys`` and their leases; returns how many values existed."""
    pipe = conn.pipeline(transaction=False)
    _queue_invalidations(pipe, keys)
    return sum(int(n) for n in pipe.execute()[1::2])


async def ainvalidate(conn: Any, keys: list[str]) -> int:
    pipe = conn.pipeline(transaction=False)
    _queue_invalidations(pipe, keys)
    return sum(int(n) for n in (await pipe.execute())[1::2])


def _queue_unlinks(pipe: Any, batch: list[bytes]) -> None:
    for group in by_slot(batch).values():
        pipe.execute_command("UNLINK", *group)


def unlink(conn: Any, batch: list[bytes]) -> int:
    """``UNLINK`` a batch of keys in one pipeline (one command per slot): a node's client, or the cluster's."""
    pipe = conn.pipeline(transaction=False)
    _queue_unlinks(pipe, batch)
    return sum(int(n) for n in pipe.execute())


async def aunlink(conn: Any, batch: list[bytes]) -> int:
    pipe = conn.pipeline(transaction=False)
    _queue_unlinks(pipe, batch)
    return sum(int(n) for n in await pipe.execute())


def unlink_scanned(conn: Any, match: str, unlink: Callable[[list[bytes]], int]) -> int:
    """``SCAN`` ``conn`` for the glob and ``unlink`` what it finds in batches; returns the count."""
    deleted = 0
    batch: list[bytes] = []
    for key in conn.scan_iter(match=match, count=SCAN_COUNT):
        batch.append(key)
        if len(batch) >= UNLINK_BATCH:
            deleted += unlink(batch)
            batch = []
    return deleted + (unlink(batch) if batch else 0)


async def aunlink_scanned(conn: Any, match: str, unlink: Callable[[list[bytes]], Awaitable[int]]) -> int:
    deleted = 0
    batch: list[bytes] = []
    async for key in conn.scan_iter(match=match, count=SCAN_COUNT):
        batch.append(key)
        if len(batch) >= UNLINK_BATCH:
            deleted += await unlink(batch)
            batch = []
    return deleted + (await unlink(batch) if batch else 0)


def unlink_matching(conn: Any, match: str) -> int:
    """``UNLINK`` every key matching the glob on every primary, the primaries side by side."""
    nodes = [conn.get_redis_connection(node) for node in conn.get_primaries()]
    with ThreadPoolExecutor(max_workers=len(nodes)) as pool:
        return sum(pool.map(lambda node: unlink_scanned(node, match, lambda batch: unlink(node, batch)), nodes))


async def aunlink_matching(conn: Any, match: str) -> int:
    return await aunlink_scanned(conn, match, lambda batch: aunlink(conn, batch))
