"""Redis connections: django-redis's pool for sync calls, one asyncio client per loop.

Reusing the django-redis pool means the project configures Redis once, in
``CACHES``. Async clients are bound to the loop that created them (redis-py
asyncio connections cannot cross loops), hence one per running loop.
"""

from __future__ import annotations

import asyncio
import threading
import time
import weakref
from collections.abc import Callable
from typing import Any, TypeVar
from urllib.parse import urlsplit

import redis
import redis.asyncio as aioredis
from django.core.signals import setting_changed
from django.dispatch import receiver
from redis.asyncio.cluster import ClusterNode as AsyncClusterNode
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import ExponentialBackoff, NoBackoff
from redis.cluster import ClusterNode
from redis.retry import Retry

from supergraph_messaging.conf import conf
from supergraph_messaging.exceptions import MessagingError, RedisUnavailable
from supergraph_messaging.redis import cluster, scripts, sentinel, serialization, urls
from supergraph_messaging.redis.breaker import CircuitBreaker
from supergraph_messaging.redis.cluster import AsyncCluster, Cluster, _cluster_client
from supergraph_messaging.redis.direct import DirectCommands, pack
from supergraph_messaging.redis.errors import ErrorBoundary
from supergraph_messaging.redis.keys import full_channel, is_sharded
from supergraph_messaging.redis.sentinel import (
    AsyncFollowingConnection,
    AsyncFollowingSentinel,
    FollowingConnection,
    FollowingSentinel,
    _client,
)
from supergraph_messaging.redis.urls import is_cluster

SyncRedis = redis.Redis

_override_url: str | None = None
_clients: dict[str, RedisClient] = {}
_default: RedisClient | None = None  # the client for url=None, on the hot path
_clients_lock = threading.Lock()


def mask_url(url: str) -> str:
    """The URL with its password replaced by ``***`` (safe for logs and errors)."""
    return urls.mask(url)


def resolve_url(url: str | None = None) -> str:
    resolved = url or _override_url or conf.redis_url
    if not resolved:
        raise MessagingError(
            "No Redis URL: set SUPERGRAPH_MESSAGING['REDIS_URL'], a django-redis cache "
            f"CACHES[{conf.cache_alias!r}], or the REDIS_URL environment variable."
        )
    return resolved


def _connection_kwargs(asynchronous: bool = False) -> dict[str, Any]:
    """Short timeouts, and two quick retries on a fresh connection.

    The retries are what make the first command after a Redis restart work:
    the pooled connection is dead, redis-py reconnects it and tries again.
    The asyncio client needs redis-py's asyncio ``Retry``: given the sync
    one it silently never retries.
    """
    retry_class = AsyncRetry if asynchronous else Retry
    return {
        "socket_timeout": conf.socket_timeout,
        "socket_connect_timeout": conf.socket_connect_timeout,
        # Not on timeouts: a frozen Redis would cost each call three socket timeouts.
        "retry": retry_class(ExponentialBackoff(cap=0.1, base=0.01), 2,
                             supported_errors=(redis.exceptions.ConnectionError,)),
        "health_check_interval": 15,
    }


_C = TypeVar("_C")
#: Seconds after a Sentinel switch when connections are dropped again (see RedisClient._primary_changed).
FOLLOW_UP_DROPS = (0.05, 0.25, 1.0)


class RedisClient:
    """Sync and async access to one Redis URL."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.masked_url = mask_url(url)
        self.breaker = CircuitBreaker(self.masked_url, self.probe)
        self.boundary = ErrorBoundary(self)
        self._sync: SyncRedis | None = None
        self._async: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, aioredis.Redis] = (
            weakref.WeakKeyDictionary()
        )
        # Sentinel: the subscribers' connections too, so that a failover reaches them at once.
        self._pubsub_clients: weakref.WeakKeyDictionary[aioredis.Redis, asyncio.AbstractEventLoop] = (
            weakref.WeakKeyDictionary()
        )
        #: Called (on the Sentinel watcher's thread) when the primary moved: the near cache resubscribes.
        self.on_failover: list[Callable[[], None]] = []
        self._pin: tuple[tuple[str, int], float] | None = None  # the announced primary, trusted until
        #: Bumped whenever Sentinel moves the primary: connections of their own (the pipelined publisher's)
        #: made under an older one are closed by their owner before the next command.
        self.generation = 0
        #: A Redis Cluster: multi-key work goes per slot, SCANs per primary, Pub/Sub to any node.
        self.cluster = urls.is_cluster(url)
        #: The cache's reads and fills, on connections of their own (:mod:`.direct`); a Cluster has none.
        self.direct: DirectCommands | None = None if self.cluster else DirectCommands(
            lambda: self.generation, lambda: self.redis.connection_pool, lambda: self.aredis.connection_pool)
        if urls.is_sentinel(url):
            from supergraph_messaging.redis import sentinel

            sentinel.watch(url, self._primary_changed, conf.socket_connect_timeout)

    def __repr__(self) -> str:
        return f"<RedisClient {self.masked_url}>"

    def sharded(self, channel: str) -> bool:
        """``channel`` goes on sharded Pub/Sub (``SPUBLISH``/``SSUBSCRIBE``): a Cluster, and ``SHARDED_CHANNELS``
        names it."""
        return self.cluster and is_sharded(channel)

    @property
    def redis(self) -> SyncRedis:
        client = self._sync
        if client is None:
            client = self._sync = self._follow(self._make_sync())
        return client

    def _make_sync(self) -> SyncRedis:
        if conf.reuses_cache_pool and self.url == conf.cache_location:
            from django_redis import get_redis_connection

            conn: SyncRedis = get_redis_connection(conf.cache_alias)
            return conn
        return sync_client(self.url, **_connection_kwargs())

    @property
    def aredis(self) -> aioredis.Redis:
        """The asyncio client of the running event loop."""
        loop = asyncio.get_running_loop()
        client = self._async.get(loop)
        if client is None:
            client = self._follow(async_client(self.url, **_connection_kwargs(asynchronous=True)))
            self._async[loop] = client
        return client

    def new_pubsub_client(self) -> aioredis.Redis:
        """A fresh asyncio client for one long-lived Pub/Sub connection.

        It must not retry on its own: redis-py would silently reconnect and
        resubscribe, and the subscriber would never learn that messages may
        have been lost in between.
        """
        kwargs = pubsub_kwargs()
        if self.cluster:
            client = cluster.any_node_async_client(self.url, **kwargs)
        else:
            client = self._follow(async_client(self.url, **kwargs))
        self._pubsub_clients[client] = asyncio.get_running_loop()
        return client

    def publishing_connection(self) -> Any:
        """A connection of its own, outside any pool, for the pipelined event publisher."""
        if self.cluster:
            return cluster.any_node_connection(self.url, **_connection_kwargs())
        pool = self.redis.connection_pool
        return pool.connection_class(**pool.connection_kwargs)

    def probe(self) -> None:
        """Raise unless Redis answers on a connection of its own, opened and closed here (the breaker's probe).

        A Sentinel's connection goes to the primary the sentinels announce; a Cluster is asked
        ``CLUSTER INFO`` on any node, and answers only once every slot is served again.
        """
        conn = self.publishing_connection()
        try:
            if self.cluster:
                conn.send_command("CLUSTER", "INFO")
                info = conn.read_response()
                if "cluster_state:ok" not in (info.decode() if isinstance(info, bytes) else str(info)):
                    raise redis.exceptions.ConnectionError("the Cluster's state is not ok")
            else:
                conn.send_command("PING")
                conn.read_response()
        finally:
            conn.disconnect()

    def _primary_changed(self, address: tuple[str, int]) -> None:
        """Sentinel moved the primary (called on the watcher's thread): point every client at the new one
        and drop every connection now, so no command goes to the demoted primary; and again shortly after.

        The sentinels close the demoted primary's clients around the same moment, so a connection may
        be reconnecting just then, through a sentinel that still names the old primary: finishing after
        the first drop, it stayed there (1 run in 8 lost every later write). The later drops end that.
        """
        self._pin = address, time.monotonic() + sentinel.PIN_SECONDS
        for _loop, client in self._all_clients():
            self._follow(client)  # clients made from now on are followed as they are made
        self._drop_connections()
        for hook in self.on_failover:
            hook()
        for delay in FOLLOW_UP_DROPS:
            timer = threading.Timer(delay, self._drop_connections)
            timer.daemon = True
            timer.start()

    def _all_clients(self) -> list[tuple[asyncio.AbstractEventLoop | None, Any]]:
        sync = [(None, self._sync)] if self._sync is not None else []
        return [*sync, *self._async.items(), *((loop, c) for c, loop in self._pubsub_clients.items())]

    def _drop_connections(self) -> None:
        self.generation += 1
        for loop, client in self._all_clients():
            if loop is None:
                client.connection_pool.disconnect()
            elif not loop.is_closed():
                loop.call_soon_threadsafe(_disconnect_soon, client)

    def _follow(self, client: _C) -> _C:
        """A client made during a failover connects to the announced primary, not a lagging sentinel's."""
        if self._pin is not None:
            sentinel.pin_primary(client, *self._pin)
        return client

    def unavailable(self, exc: BaseException) -> RedisUnavailable:
        return RedisUnavailable(f"Redis at {self.masked_url} is unreachable: {exc}")

    def connect(self) -> RedisClient:
        with self.boundary:
            self.redis.ping()
        return self

    async def aconnect(self) -> RedisClient:
        with self.boundary:
            await self.aredis.ping()
        return self

    def script(self, src: str, keys: list[str], args: list[Any]) -> Any:
        """Run a Lua script of :mod:`.scripts` (loading it if Redis forgot it); Redis errors propagate."""
        direct = self.direct
        if direct is None:
            return scripts.run(self.redis, src, keys, args)
        return direct.script(src, keys, args)

    async def ascript(self, src: str, keys: list[str], args: list[Any]) -> Any:
        direct = self.direct
        if direct is None:
            return await scripts.arun(self.aredis, src, keys, args)
        return await direct.ascript(src, keys, args)

    async def aget(self, key: str) -> Any:
        """``GET`` on the running loop's own connections (:mod:`.direct`); Redis errors propagate."""
        direct = self.direct
        if direct is None:
            return await self.aredis.get(key)
        return await direct.aexecute(pack((b"GET", key)))

    def publish(self, channel: str, data: Any) -> int:
        """``PUBLISH`` (``SPUBLISH`` for a sharded channel) ``data`` as JSON; returns how many subscribers
        received it. Pub/Sub only: :func:`~supergraph_messaging.redis_publish` is the call that follows
        ``DELIVERY``. Raises :class:`RedisUnavailable` when Redis cannot be reached.
        """
        payload = serialization.dumps(serialization.without_position(data))
        with self.boundary:
            if self.sharded(channel):
                return int(self.redis.spublish(full_channel(channel), payload))
            return int(self.redis.publish(full_channel(channel), payload))

    async def apublish(self, channel: str, data: Any) -> int:
        payload = serialization.dumps(serialization.without_position(data))
        with self.boundary:
            if self.sharded(channel):
                return int(await self.aredis.spublish(full_channel(channel), payload))
            return int(await self.aredis.publish(full_channel(channel), payload))


def pubsub_kwargs() -> dict[str, Any]:
    """Connection options of a long-lived asyncio Pub/Sub connection: no retries of its own, no read
    timeout (it waits for messages), a health check."""
    kwargs = _connection_kwargs(asynchronous=True)
    kwargs.update(retry=AsyncRetry(NoBackoff(), 0), socket_timeout=None, health_check_interval=5)
    return kwargs


def _disconnect_soon(client: aioredis.Redis) -> None:
    task = asyncio.ensure_future(client.connection_pool.disconnect())
    _pending_disconnects.add(task)
    task.add_done_callback(_pending_disconnects.discard)


_pending_disconnects: set[asyncio.Future[Any]] = set()


def get_redis_client(url: str | None = None) -> RedisClient:
    if url is None and _default is not None:
        return _default
    resolved = resolve_url(url)
    client = _clients.get(resolved)
    if client is None:
        with _clients_lock:
            client = _clients.setdefault(resolved, RedisClient(resolved))
    if url is None:
        _remember_default(client)
    return client


def _remember_default(client: RedisClient) -> None:
    global _default
    _default = client


def _set_override(url: str | None) -> None:
    global _override_url
    if url is None:
        return
    if urlsplit(url).scheme not in urls.SCHEMES:
        raise MessagingError(f"Unsupported Redis URL {mask_url(url)!r}: use redis://, rediss://, unix://, "
                             "redis+sentinel:// or redis+cluster://.")
    urls.parse(url)  # names what is wrong with a Sentinel or Cluster URL
    _override_url = url
    reset_clients()


def init_redis(url: str | None = None) -> RedisClient:
    """Point the app at ``url`` (if given) and check that Redis answers."""
    _set_override(url)
    return get_redis_client().connect()


async def ainit_redis(url: str | None = None) -> RedisClient:
    _set_override(url)
    return await get_redis_client().aconnect()


def reset_clients() -> None:
    """Forget cached clients (settings changed, or a test swapped servers)."""
    global _default
    with _clients_lock:
        _clients.clear()
        _default = None


@receiver(setting_changed)
def _on_setting_changed(setting: str, **kwargs: Any) -> None:
    if setting in ("SUPERGRAPH_MESSAGING", "CACHES"):
        reset_clients()


def sync_client(url: str, **kwargs: Any) -> redis.Redis:
    if is_cluster(url):
        return _cluster_client(url, kwargs, ClusterNode, Cluster)  # type: ignore[no-any-return]
    client: redis.Redis = _client(url, kwargs, redis.Redis.from_url, FollowingSentinel, FollowingConnection)
    return client


def async_client(url: str, **kwargs: Any) -> aioredis.Redis:
    if is_cluster(url):
        return _cluster_client(url, kwargs, AsyncClusterNode, AsyncCluster)  # type: ignore[no-any-return]
    client: aioredis.Redis = _client(url, kwargs, aioredis.Redis.from_url, AsyncFollowingSentinel,
                                     AsyncFollowingConnection)
    return client
