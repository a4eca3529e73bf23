"""Publishing one message: the one place that chooses between Pub/Sub and the durable stream.

``DELIVERY = "durable"`` appends the message to its channel's stream (and
publishes it, in the same script), so consumer groups and WebSocket resume
see it; otherwise it is a plain ``PUBLISH``. The Redis client below only
sends; it never decides.
"""

from __future__ import annotations

from typing import Any

from supergraph_messaging.conf import conf
from supergraph_messaging.delivery import streams
from supergraph_messaging.redis.client import RedisClient, get_redis_client
from supergraph_messaging.redis.serialization import dumps, without_position


def send(client: RedisClient, channel: str, data: Any, durable: bool | None = None) -> int:
    """Publish ``data`` through ``client``, durably when ``durable`` (default: ``DELIVERY == "durable"``)."""
    if not (conf.durable if durable is None else durable):
        return client.publish(channel, data)
    payload = dumps(without_position(data)).decode()
    with client.boundary:
        return streams.publish(client.redis, channel, payload)


async def asend(client: RedisClient, channel: str, data: Any, durable: bool | None = None) -> int:
    """The async twin of :func:`send`."""
    if not (conf.durable if durable is None else durable):
        return await client.apublish(channel, data)
    payload = dumps(without_position(data)).decode()
    with client.boundary:
        return await streams.apublish(client.aredis, channel, payload)


def redis_publish(channel: str, data: Any, url: str | None = None, durable: bool | None = None) -> int:
    """Publish ``data`` as JSON on ``channel``; returns the receiver count.

    With ``DELIVERY = "durable"`` it is appended to the channel's stream too
    (``durable=False``: fire-and-forget Pub/Sub only). Raises
    :class:`~supergraph_messaging.RedisUnavailable` when Redis cannot be
    reached: in a view, catch it (or publish through ``EventConfig``, which
    never fails a request).
    """
    return send(get_redis_client(url), channel, data, durable)


async def aredis_publish(channel: str, data: Any, url: str | None = None, durable: bool | None = None) -> int:
    """The async twin of :func:`redis_publish`."""
    return await asend(get_redis_client(url), channel, data, durable)
