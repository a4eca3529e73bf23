"""The Channels consumer at ``/subscribe`` (protocol modelled on graphql-transport-ws).

Every outgoing frame goes through one bounded queue per connection, so
frames stay in order and a client that cannot keep up is closed with 4008
instead of growing the server's memory. A client that stops answering the
server's pings is closed with 4008 too (under daphne, sends never block, so
the ping is what notices a client that stopped reading).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from typing import Any

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer
from django.contrib.auth.models import AnonymousUser
from django.utils.module_loading import import_string

from .conf import conf
from .connection import REDIS_ERRORS
from .hub import Route, get_hub
from .subscriptions import FilterError, get_subscription

logger = logging.getLogger("supergraph_messaging.ws")

MALFORMED = 4400
UNAUTHORIZED = 4401
FORBIDDEN = 4403
INIT_TIMEOUT = 4408
DUPLICATE_ID = 4409
TOO_MANY = 4429
TOO_SLOW = 4008

_REASONS = {
    MALFORMED: "malformed message",
    UNAUTHORIZED: "subscribe before connection_ack",
    FORBIDDEN: "forbidden",
    INIT_TIMEOUT: "no connection_init in time",
    DUPLICATE_ID: "duplicate subscription id",
    TOO_MANY: "too many subscriptions or messages",
    TOO_SLOW: "client too slow",
}


def _qualname(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def _dumps(message: dict[str, Any]) -> str:
    return json.dumps(message, separators=(",", ":"))


async def authenticate_token(token: str) -> Any:
    """Resolve ``connection_init.payload.token`` to a user, or ``None``.

    ``WS_TOKEN_AUTHENTICATOR`` (a dotted path to ``callable(token) -> user|None``)
    replaces the default, which accepts DRF tokens when ``rest_framework.authtoken``
    is installed.
    """
    path = conf.ws_token_authenticator
    if path:
        func = import_string(path)
        if asyncio.iscoroutinefunction(func):
            return await func(token)
        return await database_sync_to_async(func)(token)  # a sync authenticator may query the DB
    from django.apps import apps

    if not apps.is_installed("rest_framework.authtoken"):
        return None
    return await database_sync_to_async(_drf_token_user)(token)


def _drf_token_user(token: str) -> Any:
    from rest_framework.authtoken.models import Token

    found = Token.objects.select_related("user").filter(key=token).first()
    return found.user if found is not None and found.user.is_active else None


class SubscriptionConsumer(AsyncWebsocketConsumer):  # type: ignore[misc]  # channels ships no types
    async def connect(self) -> None:
        self.connection_id = uuid.uuid4().hex
        self.user: Any = self.scope.get("user") or AnonymousUser()
        self.acked = False
        self.closing = False
        self.routes: dict[str, Route] = {}
        self.queue: asyncio.Queue[str] = asyncio.Queue(maxsize=conf.ws_queue_size)
        self.window_start = time.monotonic()
        self.window_count = 0
        self.awaiting_pong_since: float | None = None
        self.pinger: asyncio.Task[None] | None = None
        loop = asyncio.get_running_loop()
        self.sender = loop.create_task(self._send_loop())
        self.init_timer = loop.call_later(conf.ws_init_timeout, self._init_timed_out)
        await self.accept()

    async def disconnect(self, code: int) -> None:
        self.closing = True
        self.init_timer.cancel()
        hub = get_hub()
        for route in self.routes.values():
            hub.remove(route)
        self.routes.clear()
        for task in (self.sender, self.pinger):
            if task is not None:
                task.cancel()

    # -- outgoing -----------------------------------------------------------
    def enqueue(self, text: str) -> None:
        if self.closing:
            return
        try:
            self.queue.put_nowait(text)
        except asyncio.QueueFull:
            self.abort(TOO_SLOW)

    async def _send_loop(self) -> None:
        while True:
            text = await self.queue.get()
            await self.send(text_data=text)

    def abort(self, code: int) -> None:
        """Close with ``code`` once; callable from sync code too (hub callbacks, timers)."""
        if self.closing:
            return
        self.closing = True
        logger.info("Closing WebSocket connection %s with code %d (%s).", self.connection_id, code,
                    _REASONS.get(code, "protocol"))
        hub_routes = list(self.routes.values())
        self.routes.clear()
        for route in hub_routes:
            get_hub().remove(route)
        asyncio.get_running_loop().create_task(self.close(code=code))

    def _init_timed_out(self) -> None:
        if not self.acked:
            self.abort(INIT_TIMEOUT)

    # -- Sink (called by the hub) ---------------------------------------------
    def deliver(self, route: Route, channel: str, data_json: str) -> None:
        # The event's JSON was encoded once by the hub for every route; splice it in.
        head = _dumps({"id": route.sub_id, "type": "next", "payload": {"entity": route.entity, "channel": channel}})
        self.enqueue(f'{head[:-2]},"data":{data_json}}}}}')

    def gap(self, route: Route) -> None:
        self.enqueue(_dumps({"id": route.sub_id, "type": "gap", "payload": {"reason": "reconnected"}}))

    # -- incoming -----------------------------------------------------------
    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        if self.closing:
            return
        if self._rate_exceeded():
            self.abort(TOO_MANY)
            return
        if text_data is None or len(text_data.encode()) > conf.ws_max_message_bytes:
            self.abort(MALFORMED)
            return
        try:
            message = json.loads(text_data)
        except (ValueError, RecursionError):
            self.abort(MALFORMED)
            return
        if not isinstance(message, dict) or not isinstance(message.get("type"), str):
            self.abort(MALFORMED)
            return
        handler = getattr(self, "on_" + message["type"], None) if message["type"] in _TYPES else None
        if handler is None:
            self.abort(MALFORMED)
            return
        await handler(message)

    def _rate_exceeded(self) -> bool:
        now = time.monotonic()
        if now - self.window_start >= 1.0:
            self.window_start, self.window_count = now, 0
        self.window_count += 1
        return self.window_count > conf.ws_max_messages_per_second

    async def on_connection_init(self, message: dict[str, Any]) -> None:
        if self.acked:
            self.abort(TOO_MANY)
            return
        payload = message.get("payload") or {}
        if not isinstance(payload, dict):
            self.abort(MALFORMED)
            return
        token = payload.get("token")
        if token is not None:
            try:
                user = await authenticate_token(token) if isinstance(token, str) and token else None
            except Exception:
                logger.exception("WS_TOKEN_AUTHENTICATOR %r failed; refusing the token.", conf.ws_token_authenticator)
                user = None
            if user is None:
                self.abort(FORBIDDEN)
                return
            self.user = user
        self.acked = True
        self.init_timer.cancel()
        self.enqueue(_dumps({"type": "connection_ack", "payload": {
            "connection_id": self.connection_id,
            "limits": {
                "max_subscriptions": conf.ws_max_subscriptions,
                "max_message_bytes": conf.ws_max_message_bytes,
                "max_in_values": conf.ws_max_in_values,
            },
        }}))
        if conf.ws_ping_interval:
            self.pinger = asyncio.get_running_loop().create_task(self._ping_loop())

    async def on_ping(self, message: dict[str, Any]) -> None:
        self.enqueue(_dumps({"type": "pong"}))

    async def on_pong(self, message: dict[str, Any]) -> None:
        self.awaiting_pong_since = None

    async def _ping_loop(self) -> None:
        interval = conf.ws_ping_interval
        while not self.closing:
            await asyncio.sleep(interval)
            if self.awaiting_pong_since is not None:
                if time.monotonic() - self.awaiting_pong_since > conf.ws_pong_timeout:
                    self.abort(TOO_SLOW)
                    return
                continue
            self.awaiting_pong_since = time.monotonic()
            self.enqueue(_dumps({"type": "ping"}))

    def _error(self, sub_id: str, code: str, text: str) -> None:
        self.enqueue(_dumps({"id": sub_id, "type": "error", "payload": [{"code": code, "message": text}]}))

    async def on_subscribe(self, message: dict[str, Any]) -> None:
        if not self.acked:
            self.abort(UNAUTHORIZED)
            return
        sub_id = message.get("id")
        payload = message.get("payload")
        if not isinstance(sub_id, str) or not sub_id or len(sub_id) > 128 or not isinstance(payload, dict):
            self.abort(MALFORMED)
            return
        if sub_id in self.routes:
            self.abort(DUPLICATE_ID)
            return
        if len(self.routes) >= conf.ws_max_subscriptions:
            self.abort(TOO_MANY)
            return
        entity = payload.get("entity")
        subscription = get_subscription(entity) if isinstance(entity, str) else None
        if subscription is None:
            self._error(sub_id, "unknown_entity", f"Unknown entity {entity!r}.")
            return
        try:
            allowed = await database_sync_to_async(subscription.has_permission)(self.user)
            if not allowed:
                self._error(sub_id, "forbidden", f"Not allowed to subscribe to {subscription.entity}.")
                return
            conditions = subscription.parse_filters(payload.get("filters"), conf.ws_max_in_values)
            server = await database_sync_to_async(subscription.get_server_filters)(self.user)
            conditions += subscription.parse_filters(server, 10**6, declared=False)
        except FilterError as exc:
            self._error(sub_id, exc.code, str(exc))
            return
        except Exception:
            # A bug in the Subscription's own hooks fails this subscription only, never the
            # connection and the client's other subscriptions.
            logger.exception("%s: a permission check or server filter raised on subscribe %r.",
                             _qualname(subscription), sub_id)
            self._error(sub_id, "server_error", f"{subscription.entity} could not be subscribed (server error).")
            return
        fields = payload.get("fields")
        if fields is not None and (not isinstance(fields, list) or not all(isinstance(f, str) for f in fields)):
            self._error(sub_id, "invalid_fields", "fields must be a list of field names.")
            return
        route = Route(self, sub_id, subscription.entity, list(subscription.channels), conditions,
                      tuple(fields) if fields is not None else None)
        self.routes[sub_id] = route
        try:
            await get_hub().add(route)
        except REDIS_ERRORS as exc:
            logger.warning("Subscribing %s to %s failed: %s", sub_id, subscription.entity, exc)
            self.routes.pop(sub_id, None)
            get_hub().remove(route)
            self._error(sub_id, "unavailable", "The event stream is unavailable; retry later.")
            return
        if self.closing:
            get_hub().remove(route)
            return
        self.enqueue(_dumps({"id": sub_id, "type": "subscribed", "payload": {"entity": subscription.entity}}))

    async def on_complete(self, message: dict[str, Any]) -> None:
        sub_id = message.get("id")
        if not isinstance(sub_id, str):
            self.abort(MALFORMED)
            return
        route = self.routes.pop(sub_id, None)
        if route is not None:
            get_hub().remove(route)


_TYPES = frozenset({"connection_init", "ping", "pong", "subscribe", "complete"})
