"""``websocket_urlpatterns``: the subscription endpoint, secure by default.

The route carries its own Origin check and session auth, so a project that
mounts it without wrapping it still gets both. The Origin check is
Channels' ``OriginValidator`` with the allowed list read live: the exact
origins of ``WS_ALLOWED_ORIGINS`` when set (scheme, host and port must all
match), else ``ALLOWED_HOSTS`` as ``AllowedHostsOriginValidator`` uses it.
A refusal is logged once per origin with a hint, because a non-browser
client that sends no Origin header is otherwise refused in silence.

Only the project's ASGI application imports this module, when the server
starts: that is when a service with a ``SERVICE_TOKEN`` announces itself
to its gateways (:func:`~supergraph_messaging.gateway.notices.announce`;
daphne sends no lifespan events to start it otherwise).
"""

from __future__ import annotations

import logging
from typing import Any

from channels.security.websocket import OriginValidator
from django.conf import settings
from django.urls import path

from supergraph_messaging.conf import conf
from supergraph_messaging.gateway.notices import announce
from supergraph_messaging.gateway.remote import GatewayDirectory
from supergraph_messaging.realtime.auth import SessionUserMiddleware
from supergraph_messaging.realtime.consumer import SubscriptionConsumer

logger = logging.getLogger("supergraph_messaging.ws")

_REPORTED_LIMIT = 100


class SubscriptionOriginValidator(OriginValidator):  # type: ignore[misc]  # channels ships no types
    def __init__(self, application: Any) -> None:
        super().__init__(application, [])
        self._reported: set[str] = set()

    def valid_origin(self, parsed_origin: Any) -> bool:
        exact = conf.ws_allowed_origins
        if exact is not None:
            self.allowed_origins = list(exact)
            setting = "WS_ALLOWED_ORIGINS"
        else:
            hosts = list(settings.ALLOWED_HOSTS)
            if settings.DEBUG and not hosts:
                hosts = ["localhost", "127.0.0.1", "[::1]"]
            self.allowed_origins = hosts
            setting = "ALLOWED_HOSTS"
        valid = bool(super().valid_origin(parsed_origin))
        if not valid:
            self._report(parsed_origin, setting)
        return valid

    def _report(self, parsed_origin: Any, setting: str) -> None:
        origin = parsed_origin.geturl() if parsed_origin is not None else "(none)"
        if origin in self._reported or len(self._reported) >= _REPORTED_LIMIT:
            return
        self._reported.add(origin)
        logger.warning(
            "Refused a WebSocket connection to /subscribe from Origin %s: not allowed by %s. "
            "Browsers send Origin themselves; other clients must send one that %s allows, "
            "e.g. websockets.connect(url, origin='https://your-host').", origin, setting, setting)


websocket_urlpatterns = [
    path("subscribe", SubscriptionOriginValidator(SessionUserMiddleware(
        SubscriptionConsumer.as_asgi(directory=GatewayDirectory())))),
]

announce()
