"""The distributed cache: ``CacheManager``, ``@redis_cache``, ``CacheSync``, the near cache, and the
invalidation that events drive."""

from __future__ import annotations

from supergraph_messaging.cache.decorator import redis_cache
from supergraph_messaging.cache.manager import CacheManager
from supergraph_messaging.cache.near import near_cache
from supergraph_messaging.cache.sync import CacheSync

__all__ = ["CacheManager", "CacheSync", "near_cache", "redis_cache"]
