"""The Redis transport: one client per URL (plain, Sentinel or Cluster), its circuit breaker, the JSON codec,
key names and Lua scripts. It knows nothing of delivery modes, caches or events."""

from __future__ import annotations

from supergraph_messaging.redis.breaker import CircuitBreaker
from supergraph_messaging.redis.client import RedisClient, ainit_redis, get_redis_client, init_redis

__all__ = ["CircuitBreaker", "RedisClient", "ainit_redis", "get_redis_client", "init_redis"]
