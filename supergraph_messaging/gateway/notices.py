"""Service notices: a service says it (re)started, and every gateway reads its ``/__schema`` at once
instead of at its next period.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from supergraph_messaging.conf import conf
from supergraph_messaging.delivery.history import Position
from supergraph_messaging.delivery.publish import redis_publish
from supergraph_messaging.exceptions import RedisUnavailable
from supergraph_messaging.realtime.hub import Route
from supergraph_messaging.redis.errors import REDIS_ERRORS

logger = logging.getLogger("supergraph_messaging.gateway")

#: A service publishes here when it starts; a gateway reads every /__schema again when it hears it.
NOTICE_CHANNEL = "supergraph_messaging.services"

#: What a notice or a hub subscription may fail with while Redis is away.
UNREACHABLE: tuple[type[BaseException], ...] = (*REDIS_ERRORS, RedisUnavailable)


class NoticeSink:
    """A hub sink that only wakes the gateway: any message on the notice channel means "read again"."""

    def __init__(self, wake: Callable[[], None]) -> None:
        self.wake = wake

    def deliver(self, route: Route, channel: str, data_json: str, position: Position | None = None) -> None:
        self.wake()

    def gap(self, route: Route, reason: str = "reconnected") -> None:
        self.wake()  # a notice may have been missed while Redis was away


def announce() -> None:
    """Tell gateways this service (re)started, so they read its ``/__schema`` now, not at their next period.

    Called when the ASGI application is built (:mod:`supergraph_messaging.routing`: daphne has no
    lifespan events) in a project that has a ``SERVICE_TOKEN`` and is not itself a gateway; never from
    ``ready()``, which every ``manage.py`` command runs. On a daemon thread: a process never waits for
    it, and with Redis away it only logs (gateways poll anyway).
    """
    if not conf.service_token or conf.gateway_services:
        return

    def publish() -> None:
        try:
            redis_publish(NOTICE_CHANNEL, {"service": conf.service_name or "", "event": "started"}, durable=False)
        except UNREACHABLE as exc:  # a notice is a hint: gateways poll anyway
            logger.debug("Could not announce this service to gateways: %s", exc)

    threading.Thread(target=publish, name="supergraph_messaging.announce", daemon=True).start()
