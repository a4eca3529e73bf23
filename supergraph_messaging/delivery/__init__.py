"""Getting messages from one service to another: Pub/Sub (``redis_publish``, ``RedisSubscriber``) or, with
``DELIVERY = "durable"``, the outbox, Redis Streams and consumer groups. The choice between the two is
made here, once (:mod:`.publish`)."""

from __future__ import annotations

from supergraph_messaging.delivery.consumer_groups import GroupConsumer
from supergraph_messaging.delivery.publish import aredis_publish, redis_publish
from supergraph_messaging.delivery.subscriber import RedisSubscriber, get_global_subscriber, redis_subscribe

__all__ = ["GroupConsumer", "RedisSubscriber", "aredis_publish", "get_global_subscriber", "redis_publish",
           "redis_subscribe"]
