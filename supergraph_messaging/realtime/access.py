"""Who is on a WebSocket connection, and what they may see for as long as they are.

``connection_init`` authenticates (the session the handshake carried, or a
token), and access is decided again when it may have changed: at every
subscribe, when a logout is announced, and every
``WS_AUTH_RECHECK_INTERVAL``. What is no longer allowed ends with an error
frame naming it; the connection stays. Each subscription decides for
itself (:meth:`Subscription.authorize`, :meth:`Subscription.recheck`), so
an entity of another service is asked of that service without a branch here.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Callable
from typing import Any

from channels.db import database_sync_to_async
from django.contrib.auth.models import AnonymousUser

from supergraph_messaging.conf import conf
from supergraph_messaging.realtime.auth import authenticate_token, session_user
from supergraph_messaging.realtime.hub import Route, get_hub
from supergraph_messaging.realtime.protocol import FORBIDDEN, MALFORMED, TOO_MANY, frame
from supergraph_messaging.realtime.subscriptions import get_subscription

logger = logging.getLogger("supergraph_messaging.ws")


@functools.lru_cache(maxsize=8)
def _limits(max_subscriptions: int, max_message_bytes: int, max_in_values: int) -> str:
    """The ack's ``limits`` as JSON, encoded once per settings (not once per connection)."""
    return frame({"max_subscriptions": max_subscriptions, "max_message_bytes": max_message_bytes,
                  "max_in_values": max_in_values})


class AccessMixin:
    """Authentication and re-checks, for :class:`~.consumer.SubscriptionConsumer`."""

    # Provided by the consumer.
    scope: dict[str, Any]
    connection_id: str
    user: Any
    token: str | None
    acked: bool
    closing: bool
    routes: dict[str, Route]
    #: What each subscription's re-check needs, for those that need something (:meth:`Subscription.grant`).
    grants: dict[str, Any]
    timers: dict[str, asyncio.TimerHandle]
    rechecking: asyncio.Task[None] | None
    last_ping: float
    enqueue: Callable[[str], None]
    abort: Callable[[int], None]
    error: Callable[[str, str, str], None]
    later: Callable[[str, float, Callable[[], None]], None]
    ping_tick: Callable[[], None]

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
            user = await self._token_user(token)
            if user is None:
                self.abort(FORBIDDEN)
                return
            self.user, self.token = user, token
        self.acked = True
        self.timers.pop("init").cancel()
        limits = _limits(conf.ws_max_subscriptions, conf.ws_max_message_bytes, conf.ws_max_in_values)
        # connection_id is a hex tag and a count: nothing to escape.
        self.enqueue(f'{{"type":"connection_ack","payload":{{"connection_id":"{self.connection_id}",'
                     f'"limits":{limits}}}}}')
        self.last_ping = time.monotonic()
        if conf.ws_ping_interval:
            self.ping_tick()
        if conf.ws_auth_recheck_interval:
            self.later("recheck", conf.ws_auth_recheck_interval, self._recheck)

    async def _token_user(self, token: Any) -> Any:
        if not isinstance(token, str) or not token:
            return None
        try:
            return await authenticate_token(token)
        except Exception:
            logger.exception("WS_TOKEN_AUTHENTICATOR %r failed; refusing the token.", conf.ws_token_authenticator)
            return None

    async def _current_user(self) -> Any:
        """The user as the session or token says now (logged out, deactivated: anonymous)."""
        if self.token is not None:
            return await self._token_user(self.token) or AnonymousUser()
        session = self.scope.get("session")
        if session is None or not getattr(session, "session_key", None):
            return self.user
        return await database_sync_to_async(session_user)(session.session_key)

    async def refresh_user(self) -> None:
        """Read the user again; if it changed, every subscription is checked against the new one."""
        await self._recheck_subscriptions(await self._switch_user())

    async def _switch_user(self) -> bool:
        user = await self._current_user()
        if same_user(user, self.user):
            return False
        self.user = user
        return True

    async def _recheck_subscriptions(self, user_changed: bool) -> None:
        for sub_id, route in list(self.routes.items()):
            subscription = get_subscription(route.entity)
            if subscription is None:
                continue  # a gateway's service stopped describing it: its events still come from Redis
            refusal = await subscription.recheck(self.user, self.grants.get(sub_id), user_changed)
            if refusal is not None:
                self.end(route, refusal.code, str(refusal))

    def end(self, route: Route, code: str, text: str) -> None:
        """End one subscription from the server's side: an error saying why, then complete.

        Only if it is still the one that was checked: the check awaited, and
        meanwhile the client may have completed it, or reused its id.
        """
        sub_id = route.sub_id
        if self.routes.get(sub_id) is not route:
            return
        del self.routes[sub_id]
        self.grants.pop(sub_id, None)
        get_hub().remove(route)
        self.error(sub_id, code, text)
        self.enqueue(frame({"id": sub_id, "type": "complete"}))

    def session_ended(self) -> None:
        """A logout ended this connection's session (announced by the process that served it): re-check now."""
        if self.closing or self.rechecking is not None:
            return
        timer = self.timers.pop("recheck", None)
        if timer is not None:
            timer.cancel()
        self._recheck()

    def _recheck(self) -> None:
        if not self.closing:
            self.rechecking = asyncio.get_running_loop().create_task(self._recheck_user())

    async def _recheck_user(self) -> None:
        """Every interval and at logout: the user, then each subscription (another service's is asked
        even when the user did not change: its access may have)."""
        try:
            await self._recheck_subscriptions(await self._switch_user())
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.exception("Re-checking the user of WebSocket %s failed.", self.connection_id)
        finally:
            self.rechecking = None
        self.later("recheck", conf.ws_auth_recheck_interval, self._recheck)


def same_user(a: Any, b: Any) -> bool:
    """Whether access is unchanged: both anonymous, or the same active, authenticated user."""
    a_in, b_in = bool(getattr(a, "is_authenticated", False)), bool(getattr(b, "is_authenticated", False))
    if not a_in and not b_in:
        return True
    return a_in == b_in and getattr(a, "pk", None) == getattr(b, "pk", None) and bool(getattr(a, "is_active", True))
