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

from tests.testapp import caching  # noqa: E402,F401 - registers invalidate_on templates
