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
from collections.abc import Awaitable
from typing import Any
from urllib.parse import urlparse

from channels.security.websocket import OriginValidator, WebsocketDenier
from django.conf import settings
from django.urls import path

from supergraph_messaging.conf import conf
from supergraph_messaging.gateway.notices import announce
from supergraph_messaging.gateway.remote import GatewayDirectory
from supergraph_messaging.realtime.auth import SessionUserMiddleware
from supergraph_messaging.realtime.consumer import SubscriptionConsumer

logger = logging.getLogger("supergraph_messaging.ws")

_REPORTED_LIMIT = 100
_DECIDED_LIMIT = 256


class SubscriptionOriginValidator(OriginValidator):  # type: ignore[misc]  # channels ships no types
    """Channels' ``OriginValidator`` with the allowed list read live and a decision cache.

    ``__call__`` returns the application's awaitable instead of awaiting it
    (a coroutine frame less per connection, for its whole life).
    """

    _asgi_single_callable = True  # __call__ is not a coroutine function, but this is an ASGI 3 app

    def __init__(self, application: Any) -> None:
        super().__init__(application, [])
        self._reported: set[str] = set()
        #: Decisions by (origin, allowed list): few distinct origins connect, thousands of times each.
        self._decided: dict[tuple[Any, tuple[str, ...]], bool] = {}

    def __call__(self, scope: Any, receive: Any, send: Any) -> Awaitable[Any]:
        if scope["type"] != "websocket":
            raise ValueError("You cannot use OriginValidator on a non-WebSocket connection")
        origins = [value for name, value in scope.get("headers", ()) if name == b"origin"]
        parsed = None  # none, or more than one (which to believe?): refused unless "*" is allowed
        if len(origins) == 1:
            try:
                parsed = urlparse(origins[0].decode("latin1"))
            except ValueError:  # not Latin-1, or an invalid IPv6 host (Channels let that one raise)
                parsed = None
        if self.valid_origin(parsed):
            return self.application(scope, receive, send)  # type: ignore[no-any-return]
        return WebsocketDenier()(scope, receive, send)  # type: ignore[no-any-return]

    def valid_origin(self, parsed_origin: Any) -> bool:
        exact = conf.ws_allowed_origins
        if exact is not None:
            allowed = tuple(exact)
            setting = "WS_ALLOWED_ORIGINS"
        else:
            allowed = tuple(settings.ALLOWED_HOSTS)
            if settings.DEBUG and not allowed:
                allowed = ("localhost", "127.0.0.1", "[::1]")
            setting = "ALLOWED_HOSTS"
        key = (parsed_origin, allowed)
        valid = self._decided.get(key)
        if valid is None:
            self.allowed_origins = list(allowed)
            valid = bool(super().valid_origin(parsed_origin))
            if len(self._decided) >= _DECIDED_LIMIT:  # any client can send any Origin: bounded
                self._decided.clear()
            self._decided[key] = valid
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
