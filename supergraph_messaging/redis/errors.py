"""What counts as Redis being unavailable, and the boundary that turns it into :class:`RedisUnavailable`."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

import redis

from supergraph_messaging.exceptions import RedisUnavailable

if TYPE_CHECKING:
    from supergraph_messaging.redis.client import RedisClient

#: What "Redis is unavailable" means: redis-py's own connection, timeout, read-only and
#: cluster-state errors (a Cluster no node of which answers raises ``cluster.ClusterUnreachable``,
#: a ``ConnectionError``; ``CROSSSLOT`` and redis-py's other ``RedisClusterException`` are bugs to
#: see, not outages), and our :class:`RedisUnavailable`. Never a bare ``OSError`` or
#: ``TimeoutError``: those come from user code (an HTTP fallback to a service that is
#: down), and blaming them on Redis would run the function twice and open the breaker.
REDIS_ERRORS: tuple[type[BaseException], ...] = (
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    redis.exceptions.ReadOnlyError,
    redis.exceptions.ClusterError,
    redis.exceptions.ClusterDownError,
    redis.exceptions.TryAgainError,
    redis.exceptions.MovedError,
    redis.exceptions.SlotNotCoveredError,
    RedisUnavailable,
)


class ErrorBoundary:
    """``with client.boundary:`` turns Redis errors into :class:`RedisUnavailable` naming the URL.

    A plain (sync) context manager, so it wraps an ``await`` as well as a
    call, and costs no generator per use. Only Redis calls belong inside it.
    """

    __slots__ = ("client",)

    def __init__(self, client: RedisClient) -> None:
        self.client = client

    def __enter__(self) -> None:
        return None

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: Any) -> Literal[False]:
        if exc is not None and isinstance(exc, REDIS_ERRORS) and not isinstance(exc, RedisUnavailable):
            raise self.client.unavailable(exc) from exc
        return False
