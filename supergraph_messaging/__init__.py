"""Messaging between Django services through Redis.

Public names are exported lazily: ``import supergraph_messaging`` imports no
DRF, Channels or models, so the package is safe to import from settings.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS: dict[str, str] = {
    "init_redis": "connection",
    "ainit_redis": "connection",
    "get_redis_client": "connection",
    "RedisClient": "connection",
    "redis_publish": "pubsub",
    "aredis_publish": "pubsub",
    "RedisSubscriber": "pubsub",
    "redis_subscribe": "pubsub",
    "get_global_subscriber": "pubsub",
    "CacheManager": "cache",
    "redis_cache": "decorators",
    "CacheSync": "cachesync",
    "EventConfig": "events",
    "register_model_events": "events",
    "publish_event": "events",
    "EventPublishingMixin": "viewsets",
    "ModelViewSet": "viewsets",
    "Subscription": "subscriptions",
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
    from .cache import CacheManager
    from .cachesync import CacheSync
    from .connection import RedisClient, ainit_redis, get_redis_client, init_redis
    from .decorators import redis_cache
    from .events import EventConfig, publish_event, register_model_events
    from .exceptions import CacheKeyError, MessagingError, RedisUnavailable
    from .pubsub import (
        RedisSubscriber,
        aredis_publish,
        get_global_subscriber,
        redis_publish,
        redis_subscribe,
    )
    from .subscriptions import Subscription
    from .viewsets import EventPublishingMixin, ModelViewSet


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'supergraph_messaging' has no attribute {name!r}")
    value = getattr(import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(list(globals()) + __all__)
