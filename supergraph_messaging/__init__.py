"""Messaging between Django services through Redis.

Public names are exported lazily: ``import supergraph_messaging`` imports no
DRF, Channels or models, so the package is safe to import from settings.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS: dict[str, str] = {
    "init_redis": "redis.client",
    "ainit_redis": "redis.client",
    "get_redis_client": "redis.client",
    "RedisClient": "redis.client",
    "redis_publish": "delivery.publish",
    "aredis_publish": "delivery.publish",
    "RedisSubscriber": "delivery.subscriber",
    "redis_subscribe": "delivery.subscriber",
    "get_global_subscriber": "delivery.subscriber",
    "CacheManager": "cache.manager",
    "redis_cache": "cache.decorator",
    "CacheSync": "cache.sync",
    "EventConfig": "events.config",
    "register_model_events": "events.model_signals",
    "publish_event": "events.publishing",
    "EventPublishingMixin": "events.viewsets",
    "ModelViewSet": "events.viewsets",
    "Subscription": "realtime.subscriptions",
    "MessagingError": "exceptions",
    "RedisUnavailable": "exceptions",
    "CacheKeyError": "exceptions",
}

__all__ = [
    "CacheKeyError",
    "CacheManager",
    "CacheSync",
    "EventConfig",
    "EventPublishingMixin",
    "MessagingError",
    "ModelViewSet",
    "RedisClient",
    "RedisSubscriber",
    "RedisUnavailable",
    "Subscription",
    "ainit_redis",
    "aredis_publish",
    "get_global_subscriber",
    "get_redis_client",
    "init_redis",
    "publish_event",
    "redis_cache",
    "redis_publish",
    "redis_subscribe",
    "register_model_events",
]

if TYPE_CHECKING:  # pragma: no cover
    from supergraph_messaging.cache.decorator import redis_cache
    from supergraph_messaging.cache.manager import CacheManager
    from supergraph_messaging.cache.sync import CacheSync
    from supergraph_messaging.delivery.publish import aredis_publish, redis_publish
    from supergraph_messaging.delivery.subscriber import (
        RedisSubscriber,
        get_global_subscriber,
        redis_subscribe,
    )
    from supergraph_messaging.events.config import EventConfig
    from supergraph_messaging.events.model_signals import register_model_events
    from supergraph_messaging.events.publishing import publish_event
    from supergraph_messaging.events.viewsets import EventPublishingMixin, ModelViewSet
    from supergraph_messaging.exceptions import CacheKeyError, MessagingError, RedisUnavailable
    from supergraph_messaging.realtime.subscriptions import Subscription
    from supergraph_messaging.redis.client import RedisClient, ainit_redis, get_redis_client, init_redis


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'supergraph_messaging' has no attribute {name!r}")
    value = getattr(import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(list(globals()) + __all__)
