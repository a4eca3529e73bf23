"""Handlers that messaging_listen discovers; each leaves a visible effect in Redis."""

from __future__ import annotations

import time
from typing import Any

from supergraph_messaging import get_redis_client, redis_subscribe


@redis_subscribe("testapp.ping")
def record_ping(data: dict[str, Any]) -> None:
    get_redis_client().redis.rpush("testapp:pings", str(data.get("n")))


@redis_subscribe("testapp.slow")
def slow_handler(data: dict[str, Any]) -> None:
    """Sleeps as long as the message says, then records it (the worker attack tests)."""
    time.sleep(float(data.get("sleep", 0)))
    get_redis_client().redis.rpush("testapp:slow", str(data.get("n")))


@redis_subscribe("testapp.fast")
def fast_handler(data: dict[str, Any]) -> None:
    """Records how long after publishing it ran."""
    get_redis_client().redis.rpush("testapp:fast", str(time.time() - float(data["t"])))

@redis_subscribe("testapp.orders", once=True)
def apply_order(data: dict[str, Any]) -> None:
    """An effect that must happen once per event (durable tests): a row per order, then an optional stall."""
    from tests.testapp.models import CameraModel

    CameraModel.objects.create(name=f"order-{data['id']}")
    time.sleep(float(data.get("sleep", 0)))


@redis_subscribe("testapp.flaky")
def flaky(data: dict[str, Any]) -> None:
    """Fails on events marked to fail (durable tests: retries and the dead-letter stream)."""
    if data.get("fail"):
        raise RuntimeError(f"cannot handle {data}")
    get_redis_client().redis.rpush("testapp:flaky", str(data.get("n")))


@redis_subscribe("testapp.poison", once=True)
def poison(data: dict[str, Any]) -> None:
    """A handler with a bug while the key ``testapp:poison:broken`` exists (dead-letter tests: fix it by
    deleting the key, then replay); its effect must happen once per event."""
    from tests.testapp.models import CameraModel

    if get_redis_client().redis.exists("testapp:poison:broken"):
        raise RuntimeError("the handler's bug")
    CameraModel.objects.create(name=f"poison-{data['id']}")


@redis_subscribe("chaos.rows", once=True)
def chaos_effect(data: dict[str, Any]) -> None:
    """The durability harness's handler: an effect in the database (must happen once per event) and
    the order it saw each row's versions in."""
    from tests.testapp.models import CameraModel

    CameraModel.objects.create(name=f"chaos:{data['row']}:{data['version']}")
    get_redis_client().redis.rpush("chaos:order", f"{data['row']}:{data['version']}")


from tests.testapp import caching  # noqa: E402,F401 - registers invalidate_on templates
