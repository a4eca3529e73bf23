"""Which Redis a URL names, and redis-py clients for it: one node, a Sentinel-monitored primary, or a Cluster.

``redis+sentinel://[user:password@]host:26379,host2:26379/SERVICE[/db]``
(``rediss+sentinel://`` for TLS) names the sentinels and the service; the
clients ask the sentinels for the current primary on every (re)connect, so
a failover is followed instead of writing to a demoted primary until it
refuses. ``redis+cluster://[user:password@]host:port,host:port``
(``rediss+cluster://``) names some nodes of a Redis Cluster; redis-py's
cluster clients discover the rest. Plain ``redis://``, ``rediss://`` and
``unix://`` URLs go to redis-py's ``from_url`` unchanged.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from typing import Any, cast
from urllib.parse import unquote, urlsplit

import redis
import redis.asyncio as aioredis
from redis.asyncio.cluster import ClusterNode as AsyncClusterNode
from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster
from redis.asyncio.sentinel import Sentinel as AsyncSentinel
from redis.asyncio.sentinel import SentinelManagedConnection as AsyncSentinelManagedConnection
from redis.cluster import ClusterNode, RedisCluster
from redis.sentinel import Sentinel, SentinelManagedConnection

from .exceptions import MessagingError

SENTINEL_SCHEMES = ("redis+sentinel", "rediss+sentinel")
CLUSTER_SCHEMES = ("redis+cluster", "rediss+cluster")
PLAIN_SCHEMES = ("redis", "rediss", "unix")
SCHEMES = (*PLAIN_SCHEMES, *SENTINEL_SCHEMES, *CLUSTER_SCHEMES)
_NETLOC_CREDENTIALS = re.compile(r"^(?P<user>[^:@]*)(?::(?P<password>[^@]*))?@")


@dataclass(frozen=True)
class SentinelTarget:
    sentinels: tuple[tuple[str, int], ...]
    service: str
    db: int
    username: str | None
    password: str | None
    ssl: bool


@dataclass(frozen=True)
class ClusterTarget:
    nodes: tuple[tuple[str, int], ...]
    username: str | None
    password: str | None
    ssl: bool


def _hosts(url: str, kind: str) -> tuple[tuple[tuple[str, int], ...], str | None, str | None]:
    """(host:port list, username, password) of a multi-host URL."""
    netloc = urlsplit(url).netloc
    username = password = None
    match = _NETLOC_CREDENTIALS.match(netloc)
    if match:
        username = unquote(match["user"]) or None
        password = unquote(match["password"]) if match["password"] is not None else None
        netloc = netloc[match.end():]
    hosts = []
    for node in filter(None, netloc.split(",")):
        host, _, port = node.rpartition(":")
        if not host or not port.isdigit():
            raise MessagingError(f"{kind} URL {mask(url)}: {node!r} is not host:port.")
        hosts.append((host.strip("[]"), int(port)))
    if not hosts:
        raise MessagingError(f"{kind} URL {mask(url)} names no {kind.lower()} (host:port,host:port).")
    return tuple(hosts), username, password


def parse_sentinel(url: str) -> SentinelTarget:
    """The parts of a ``redis+sentinel://`` URL, or a :class:`MessagingError` naming what is wrong."""
    sentinels, username, password = _hosts(url, "Sentinel")
    parts = urlsplit(url)
    path = [p for p in parts.path.split("/") if p]
    if not path or len(path) > 2 or (len(path) == 2 and not path[1].isdigit()):
        raise MessagingError(f"Sentinel URL {mask(url)} must end in /SERVICE_NAME or /SERVICE_NAME/db.")
    return SentinelTarget(sentinels, unquote(path[0]), int(path[1]) if len(path) == 2 else 0,
                          username, password, parts.scheme == "rediss+sentinel")


def parse_cluster(url: str) -> ClusterTarget:
    """The parts of a ``redis+cluster://`` URL; a database number is an error (a Cluster has only db 0)."""
    nodes, username, password = _hosts(url, "Cluster")
    parts = urlsplit(url)
    path = parts.path.strip("/")
    if path not in ("", "0"):
        raise MessagingError(f"Cluster URL {mask(url)} names database {path!r}: a Redis Cluster has only "
                             "database 0; remove the path.")
    return ClusterTarget(nodes, username, password, parts.scheme == "rediss+cluster")


def mask(url: str) -> str:
    """The URL with its password replaced by ``***``, for any number of hosts."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url
    netloc, slash, path = rest.partition("/")
    match = _NETLOC_CREDENTIALS.match(netloc)
    if match and match["password"] is not None:
        netloc = f"{match['user']}:***@{netloc[match.end():]}"
    return f"{scheme}://{netloc}{slash}{path}"


def is_sentinel(url: str) -> bool:
    return url.split("://", 1)[0] in SENTINEL_SCHEMES


def is_cluster(url: str) -> bool:
    return url.split("://", 1)[0] in CLUSTER_SCHEMES


def parse(url: str) -> None:
    """Raise a :class:`MessagingError` naming what is wrong with a Sentinel or Cluster URL."""
    if is_sentinel(url):
        parse_sentinel(url)
    elif is_cluster(url):
        parse_cluster(url)


def _credentials(target: SentinelTarget | ClusterTarget) -> dict[str, Any]:
    return {k: v for k, v in (("username", target.username), ("password", target.password)) if v is not None}


def _sentinel_kwargs(target: SentinelTarget, kwargs: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(kwargs of the connections to the sentinels, kwargs of the connections to the primary)."""
    auth = _credentials(target)
    # The app's retry too: redis-py's default backs off for seconds, so unreachable sentinels took 12 s to say so.
    timeouts: dict[str, Any] = {k: kwargs[k] for k in ("socket_timeout", "socket_connect_timeout", "retry")
                                if k in kwargs}
    ssl = {"ssl": True} if target.ssl else {}
    return {**timeouts, **ssl}, {**kwargs, **auth, **ssl, "db": target.db}


#: How long an announced primary is trusted over the sentinels' answers (they converge within seconds).
PIN_SECONDS = 10.0


class FollowingSentinel(Sentinel):
    """A Sentinel client that can be told the new primary (from ``+switch-master``).

    After a manual failover the old primary stays up, and a sentinel that has not caught up, or that
    has not connected to the new primary yet, still names the old one: asking would send the reconnect
    straight back (measured: 1,725 writes lost in one run). Pinned, the announced address wins for
    ``PIN_SECONDS``.
    """

    _pinned: tuple[str, int] | None = None
    _pinned_until = 0.0

    def pin(self, address: tuple[str, int], until: float) -> None:
        self._pinned, self._pinned_until = address, until

    def discover_master(self, service_name: str) -> Any:
        if self._pinned is not None and time.monotonic() < self._pinned_until:
            return self._pinned
        return cast(Any, super()).discover_master(service_name)  # untyped before redis-py 8.2


class AsyncFollowingSentinel(AsyncSentinel):
    """:class:`FollowingSentinel` for asyncio clients."""

    _pinned: tuple[str, int] | None = None
    _pinned_until = 0.0

    def pin(self, address: tuple[str, int], until: float) -> None:
        self._pinned, self._pinned_until = address, until

    async def discover_master(self, service_name: str) -> Any:
        if self._pinned is not None and time.monotonic() < self._pinned_until:
            return self._pinned
        return await super().discover_master(service_name)


def _pinned(pool: Any) -> tuple[str, int] | None:
    manager = getattr(pool, "sentinel_manager", None)
    if not isinstance(manager, FollowingSentinel | AsyncFollowingSentinel) or time.monotonic() >= manager._pinned_until:
        return None
    return manager._pinned


class FollowingConnection(SentinelManagedConnection):
    """Checks, once connected, that it reached the pinned primary: a connection that asked a lagging
    sentinel just before the pin would otherwise finish connecting to the demoted primary and stay."""

    def _connect_retry(self) -> None:
        super()._connect_retry()  # type: ignore[no-untyped-call]
        pinned = _pinned(self.connection_pool)
        if pinned is not None and (self.host, self.port) != pinned:
            self.disconnect()  # type: ignore[no-untyped-call]
            self.connect_to(pinned)  # type: ignore[no-untyped-call]


class AsyncFollowingConnection(AsyncSentinelManagedConnection):
    """:class:`FollowingConnection` for asyncio clients."""

    async def _connect_retry(self) -> None:
        await super()._connect_retry()  # type: ignore[no-untyped-call]
        pinned = _pinned(self.connection_pool)
        if pinned is not None and (self.host, self.port) != pinned:
            await self.disconnect()
            await self.connect_to(pinned)  # type: ignore[no-untyped-call]


def pin_primary(client: Any, address: tuple[str, int], until: float) -> None:
    """Make ``client`` (a Sentinel-managed one) connect to ``address`` until ``until`` (time.monotonic())."""
    manager = getattr(client.connection_pool, "sentinel_manager", None)
    if isinstance(manager, FollowingSentinel | AsyncFollowingSentinel):
        manager.pin(address, until)


def _client(url: str, kwargs: dict[str, Any], from_url: Any, sentinel_class: Any, connection_class: Any) -> Any:
    if not is_sentinel(url):
        return from_url(url, **kwargs)
    target = parse_sentinel(url)
    sentinel_kwargs, primary_kwargs = _sentinel_kwargs(target, kwargs)
    if not target.ssl:  # (TLS keeps redis-py's own class: no after-connect check, the repeated drops only)
        primary_kwargs["connection_class"] = connection_class
    sentinel = sentinel_class(list(target.sentinels), sentinel_kwargs=sentinel_kwargs, **sentinel_kwargs)
    return sentinel.master_for(target.service, **primary_kwargs)


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
