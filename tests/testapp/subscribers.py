"""Handlers that messaging_listen discovers; each leaves a visible effect in Redis."""

from __future__ import annotations

from typing import Any

from supergraph_messaging import get_redis_client, redis_subscribe


@redis_subscribe("testapp.ping")
def record_ping(data: dict[str, Any]) -> None:
    get_redis_client().redis.rpush("testapp:pings", str(data.get("n")))

from tests.testapp import caching  # noqa: E402,F401 - registers invalidate_on templates
