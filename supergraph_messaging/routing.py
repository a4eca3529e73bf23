"""``websocket_urlpatterns``: the subscription endpoint, secure by default.

The route carries its own Origin check (ALLOWED_HOSTS) and session auth, so
a project that mounts it without wrapping it still gets both.
"""

from __future__ import annotations

from channels.auth import AuthMiddlewareStack
from channels.security.websocket import AllowedHostsOriginValidator
from django.urls import path

from .consumers import SubscriptionConsumer

websocket_urlpatterns = [
    path("subscribe", AllowedHostsOriginValidator(AuthMiddlewareStack(SubscriptionConsumer.as_asgi()))),
]
