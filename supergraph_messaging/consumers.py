"""The Channels consumer at ``/subscribe`` (protocol modelled on graphql-transport-ws).

Every outgoing frame goes through one bounded queue per connection, so
frames stay in order and a client that cannot keep up is closed with 4008
instead of growing the server's memory. A client that stops answering the
server's pings is closed with 4008 too (under daphne, sends never block, so
the ping is what notices a client that stopped reading).
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import time
import uuid
from typing import Any

from channels.consumer import get_handler_name
from channels.db import database_sync_to_async
from channels.exceptions import StopConsumer
from channels.generic.websocket import AsyncWebsocketConsumer
from django.contrib.auth.models import AnonymousUser

from .conf import conf
from .connection import REDIS_ERRORS, get_redis_client
from .credentials import authenticate_token, session_digest, session_user
from .flow import FlowControl
from .gateway import get_gateway, is_remote
from .hub import Route, get_hub
from .recovery import Position, fill
from .serialization import dumps
from .subscriptions import Refused, Subscription, get_subscription, raw_prefilter

logger = logging.getLogger("supergraph_messaging.ws")

MALFORMED = 4400
UNAUTHORIZED = 4401
FORBIDDEN = 4403
INIT_TIMEOUT = 4408
DUPLICATE_ID = 4409
TOO_MANY = 4429
TOO_SLOW = 4008

#: A resume costs the connection one message of its rate limit per this many payload bytes it reads.
RECOVERY_BYTES_PER_MESSAGE = 64 * 1024

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


@functools.lru_cache(maxsize=1024)
def _quoted(text: str) -> str:
    """A channel name or epoch as JSON (few distinct values, one per event)."""
    return json.dumps(text)


def _dumps(message: dict[str, Any]) -> str:
    return json.dumps(message, separators=(",", ":"))


class SubscriptionConsumer(AsyncWebsocketConsumer):  # type: ignore[misc]  # channels ships no types
    # Events reach a connection through the per-process hub, never through a channel layer: an
    # alias no project configures spares each connection a channel (with channels-redis, a Redis
    # receive) that nothing would ever send to.
    channel_layer_alias = "supergraph_messaging.no-channel-layer"

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        """Read frames as they arrive (rate counted on arrival), handle them in order, release the routes.

        Channels reads the next frame only after the previous one was
        handled, so a slow ``subscribe`` made a client's spaced frames look
        like a burst; this loop takes them off the socket at once and counts
        them there (past the limit it stops reading and closes 4429). The
        frames are handled by a task that exists only while there are frames
        to handle: an idle connection holds no task, queue or timer of its
        own beyond this loop, which is what lets one process hold 10,000.
        """
        self.scope = scope
        self.channel_layer = None
        self.base_send = send
        self.frames: list[dict[str, Any]] = []
        self.handling: asyncio.Task[None] | None = None
        self.closing = False
        # A token bucket: WS_MAX_MESSAGES_PER_SECOND frames a second, in bursts of up to as many. (A fixed
        # one-second window closed 7 of 10 clients sending 80 frames a second in bursts: two bursts could
        # fall in one window.)
        self.tokens, self.refilled = float(conf.ws_max_messages_per_second), time.monotonic()
        try:
            while True:
                message = await receive()
                if message.get("type") == "websocket.receive" and not self._charge(1.0):
                    self._handle({"type": "sgm.rate_exceeded"})
                    while message.get("type") != "websocket.disconnect":
                        message = await receive()  # drop the rest unread; the close is on its way
                self._handle(message)
                if message.get("type") == "websocket.disconnect":
                    break
            if self.handling is not None:
                await self.handling
        finally:
            if self.handling is not None:
                self.handling.cancel()
            self._release_routes()

    def _charge(self, cost: float) -> bool:
        """Take ``cost`` messages' worth from the connection's token bucket; False when it is overdrawn."""
        limit = float(conf.ws_max_messages_per_second)
        now = time.monotonic()
        self.tokens = min(limit, self.tokens + (now - self.refilled) * limit) - cost
        self.refilled = now
        return self.tokens >= 0.0

    def _handle(self, message: dict[str, Any]) -> None:
        self.frames.append(message)
        if self.handling is None:
            self.handling = asyncio.get_running_loop().create_task(self._handle_frames())

    async def _handle_frames(self) -> None:
        try:
            while self.frames:
                await self.dispatch(self.frames.pop(0))
        except StopConsumer:
            self.frames.clear()
        except Exception:
            # Channels would let this end the connection with a traceback in the log; so do we,
            # but the client gets a close (1011), never the traceback.
            logger.exception("%s: handling a frame failed; closing.", _qualname(type(self)))
            self.frames.clear()
            self.closing = True
            await self.close(code=1011)
        finally:
            self.handling = None

    async def dispatch(self, message: dict[str, Any]) -> None:
        """Channels' dispatch, without its ``close_old_connections`` thread hop per frame.

        Channels runs that hop (one shared thread, so serialised across all
        connections) before every frame, pings and pongs included; it made
        connection set-up cost grow with the number of connections. Every
        ORM call here goes through ``database_sync_to_async``, which closes
        old connections around itself.
        """
        handler = getattr(self, get_handler_name(message), None)
        if handler is None:
            raise ValueError(f"{_qualname(type(self))} has no handler for message type {message['type']!r}.")
        await handler(message)

    async def websocket_disconnect(self, message: dict[str, Any]) -> None:
        """Channels' version, without the same hop (and without groups: the hub holds the routes)."""
        await self.disconnect(message.get("code", 1000))
        raise StopConsumer

    async def sgm_rate_exceeded(self, message: dict[str, Any]) -> None:
        self.abort(TOO_MANY)

    async def connect(self) -> None:
        self.connection_id = uuid.uuid4().hex
        self.user: Any = self.scope.get("user") or AnonymousUser()
        self.token: str | None = None
        self.acked = False
        self.routes: dict[str, Route] = {}
        self.outgoing: list[str] = []
        self.sending: asyncio.Task[None] | None = None
        self.flow = FlowControl(conf.ws_max_buffered_bytes)
        self.last_ping = 0.0
        self.rechecking: asyncio.Task[None] | None = None
        #: What each subscription to another service's entity was granted with: (filters, server filters).
        self.remote_grants: dict[str, tuple[Any, dict[str, Any]]] = {}
        get_gateway()  # a gateway starts reading its services' schemas with its first client
        self.timers: dict[str, asyncio.TimerHandle] = {
            "init": asyncio.get_running_loop().call_later(conf.ws_init_timeout, self._init_timed_out)}
        session_key = getattr(self.scope.get("session"), "session_key", None)
        self.session_digest = session_digest(session_key) if session_key else None
        if self.session_digest is not None:
            get_hub().watch_session(self.session_digest, self)
        await self.accept()

    async def disconnect(self, code: int) -> None:
        self.closing = True
        self._release_routes()
        digest = getattr(self, "session_digest", None)
        if digest is not None:
            get_hub().unwatch_session(digest, self)
        for timer in self.timers.values():
            timer.cancel()
        for task in (self.sending, self.rechecking):
            if task is not None:
                task.cancel()

    def _release_routes(self) -> None:
        routes = getattr(self, "routes", None)
        if not routes:
            return
        hub = get_hub()
        for route in routes.values():
            hub.remove(route)
        routes.clear()

    # -- outgoing -----------------------------------------------------------
    def enqueue(self, text: str) -> None:
        """Queue a frame; a client over its unacknowledged-bytes budget or queue is closed with 4008."""
        if self.closing:
            return
        pinging = bool(conf.ws_ping_interval)
        if not self.flow.on_send(len(text)) and pinging:
            logger.info("WebSocket %s has %d bytes unacknowledged (budget %d).", self.connection_id,
                        self.flow.in_flight, self.flow.budget)
            self.abort(TOO_SLOW)
            return
        if len(self.outgoing) >= conf.ws_queue_size:
            self.abort(TOO_SLOW)
            return
        self.outgoing.append(text)
        if self.sending is None:
            self.sending = asyncio.get_running_loop().create_task(self._send_outgoing())
        if pinging and self.acked and self.flow.wants_ping():
            self._send_ping()

    async def _send_outgoing(self) -> None:
        """Send what is queued, in order; the task ends when the queue is empty (idle costs nothing)."""
        try:
            while self.outgoing:
                await self.send(text_data=self.outgoing.pop(0))
        finally:
            self.sending = None

    def abort(self, code: int) -> None:
        """Close with ``code`` once; callable from sync code too (hub callbacks, timers)."""
        if self.closing:
            return
        self.closing = True
        logger.info("Closing WebSocket connection %s with code %d (%s).", self.connection_id, code,
                    _REASONS.get(code, "protocol"))
        self._release_routes()
        asyncio.get_running_loop().create_task(self.close(code=code))

    def _init_timed_out(self) -> None:
        if not self.acked:
            self.abort(INIT_TIMEOUT)

    # -- Sink (called by the hub) ---------------------------------------------
    def deliver(self, route: Route, channel: str, data_json: str, position: Position | None = None) -> None:
        if route.buffer is not None:  # a resume is replaying what the client missed: live frames wait
            route.buffer.append((channel, data_json, position))
            return
        self._next(route, channel, data_json, position)

    def _next(self, route: Route, channel: str, data_json: str, position: Position | None) -> None:
        if len(data_json) > conf.ws_max_event_bytes:
            # Never the bytes: a huge event would be queued once per subscription.
            self.gap(route, "event_too_large")
            return
        # The event's JSON was encoded once by the hub for every route and the route's part of the
        # frame once per route: a delivery only splices strings (json.dumps of the frame's head was
        # a fifth of the hub's time at 10,000 connections).
        prefix = route.sink_state
        if prefix is None:
            prefix = route.sink_state = (f'{{"id":{json.dumps(route.sub_id)},"type":"next",'
                                         f'"payload":{{"entity":{json.dumps(route.entity)},"channel":')
        where = _quoted(channel)
        if position is not None:
            where = f'{where},"offset":{int(position[0])},"epoch":{_quoted(position[1])}'
        self.enqueue(f'{prefix}{where},"data":{data_json}}}}}')

    def gap(self, route: Route, reason: str = "reconnected") -> None:
        self.enqueue(_dumps({"id": route.sub_id, "type": "gap", "payload": {"reason": reason}}))

    # -- incoming -----------------------------------------------------------
    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        if self.closing:
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
        try:
            await handler(message)
        except asyncio.CancelledError:
            raise
        except Exception:
            # Whatever a frame does, it never crashes the connection with 1011 and a traceback.
            logger.exception("Handling a %r frame on WebSocket %s failed.", message["type"], self.connection_id)
            self.abort(MALFORMED)

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
        self.enqueue(_dumps({"type": "connection_ack", "payload": {
            "connection_id": self.connection_id,
            "limits": {
                "max_subscriptions": conf.ws_max_subscriptions,
                "max_message_bytes": conf.ws_max_message_bytes,
                "max_in_values": conf.ws_max_in_values,
            },
        }}))
        self.last_ping = time.monotonic()
        if conf.ws_ping_interval:
            self._ping_tick()
        if conf.ws_auth_recheck_interval:
            self._later("recheck", conf.ws_auth_recheck_interval, self._recheck)

    async def _token_user(self, token: Any) -> Any:
        if not isinstance(token, str) or not token:
            return None
        try:
            return await authenticate_token(token)
        except Exception:
            logger.exception("WS_TOKEN_AUTHENTICATOR %r failed; refusing the token.", conf.ws_token_authenticator)
            return None

    async def on_ping(self, message: dict[str, Any]) -> None:
        payload = message.get("payload")
        self.enqueue(_dumps({"type": "pong", "payload": payload} if isinstance(payload, dict) else {"type": "pong"}))

    async def on_pong(self, message: dict[str, Any]) -> None:
        payload = message.get("payload")
        ping_id = payload.get("id") if isinstance(payload, dict) else None
        if ping_id is None:
            self.flow.on_bare_pong()  # alive; acknowledges nothing
            return
        # Only a pong echoing an outstanding ping's id acknowledges bytes; other ids are ignored.
        self.flow.on_pong(ping_id)

    def _send_ping(self) -> None:
        self.enqueue(_dumps({"type": "ping", "payload": {"id": self.flow.new_ping()}}))

    def _later(self, name: str, delay: float, callback: Any) -> None:
        if not self.closing:
            self.timers[name] = asyncio.get_running_loop().call_later(delay, callback)

    def _ping_tick(self) -> None:
        """Ping every interval; close a client whose oldest ping went unanswered past the timeout.

        A timer, not a task per connection: an idle connection should cost
        a few hundred bytes, not a coroutine frame per duty.
        """
        interval, timeout = conf.ws_ping_interval, conf.ws_pong_timeout
        now = time.monotonic()
        oldest = self.flow.oldest_unanswered()
        if oldest is not None and now - oldest > timeout:
            self.abort(TOO_SLOW)
            return
        if oldest is None and now - self.last_ping >= interval:
            self.last_ping = now
            self._send_ping()
        self._later("ping", min(interval, timeout) / 2, self._ping_tick)

    # -- access that ends when it should --------------------------------------
    async def _current_user(self) -> Any:
        """The user as the session or token says now (logged out, deactivated: anonymous)."""
        if self.token is not None:
            return await self._token_user(self.token) or AnonymousUser()
        session = self.scope.get("session")
        if session is None or not getattr(session, "session_key", None):
            return self.user
        return await database_sync_to_async(session_user)(session.session_key)

    async def _refresh_user(self) -> None:
        user = await self._current_user()
        if _same_user(user, self.user):
            return
        self.user = user
        for sub_id, route in list(self.routes.items()):
            subscription = get_subscription(route.entity)
            if sub_id in self.remote_grants:
                continue  # its service decides: _recheck_remote
            try:
                allowed = subscription is not None and await database_sync_to_async(subscription.has_permission)(user)
            except Exception:
                logger.exception("A permission check raised while re-checking %r.", sub_id)
                allowed = False
            if not allowed:
                self._end(route, "forbidden", f"Access to {route.entity} ended (logged out or deactivated).")

    def _end(self, route: Route, code: str, text: str) -> None:
        """End one subscription from the server's side: an error saying why, then complete.

        Only if it is still the one that was checked: the check awaited, and
        meanwhile the client may have completed it, or reused its id.
        """
        sub_id = route.sub_id
        if self.routes.get(sub_id) is not route:
            return
        del self.routes[sub_id]
        self.remote_grants.pop(sub_id, None)
        get_hub().remove(route)
        self._error(sub_id, code, text)
        self.enqueue(_dumps({"id": sub_id, "type": "complete"}))

    async def _recheck_remote(self) -> None:
        """Ask each service again about its entities' subscriptions; a refusal ends them, as at logout.

        A service that does not answer keeps them: their events come from
        Redis, and the next re-check asks again.
        """
        for sub_id, (filters, granted) in list(self.remote_grants.items()):
            route = self.routes.get(sub_id)
            subscription = get_subscription(route.entity) if route is not None else None
            if route is None or subscription is None or not is_remote(subscription):
                continue
            try:
                server = await subscription.authorize(self.user, filters)
            except Refused as exc:
                if exc.code != "unavailable":
                    self._end(route, exc.code, f"Access to {subscription.entity} ended: {exc}")
                continue
            if server != granted:
                self._end(route, "forbidden", f"Access to {subscription.entity} changed; subscribe again.")

    async def _access(self, subscription: type[Subscription], filters: Any) -> dict[str, Any]:
        """The server filters for this client, or :class:`Refused`: decided here, or by the owning service."""
        if is_remote(subscription):
            return await subscription.authorize(self.user, filters)
        server: dict[str, Any] | None = await database_sync_to_async(subscription.access)(self.user)
        if server is None:
            raise Refused(f"Not allowed to subscribe to {subscription.entity}.")
        return server

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
        try:
            await self._refresh_user()
            await self._recheck_remote()
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.exception("Re-checking the user of WebSocket %s failed.", self.connection_id)
        finally:
            self.rechecking = None
        self._later("recheck", conf.ws_auth_recheck_interval, self._recheck)

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
        subscription = await self._subscription(entity)
        if subscription is None:
            gateway = get_gateway()
            down = gateway.unavailable() if gateway is not None else []
            hint = f" (not answering: service {', '.join(map(repr, down))}; it may be theirs)" if down else ""
            self._error(sub_id, "unknown_entity", f"Unknown entity {entity!r}{hint}.")
            return
        fields, problem = _parse_fields(subscription, payload.get("fields"))
        if problem:
            self._error(sub_id, "invalid_fields", problem)
            return
        await self._refresh_user()  # access is decided by the user as of now, not as of connect
        try:
            server = await self._access(subscription, payload.get("filters"))
            conditions = subscription.parse_filters(payload.get("filters"), conf.ws_max_in_values)
            conditions += subscription.parse_filters(server, 10**6, declared=False)
        except Refused as exc:
            self._error(sub_id, exc.code, str(exc))
            return
        except Exception:
            # A bug in the Subscription's own hooks fails this subscription only, never the
            # connection and the client's other subscriptions.
            logger.exception("%s: a permission check or server filter raised on subscribe %r.",
                             _qualname(subscription), sub_id)
            self._error(sub_id, "server_error", f"{subscription.entity} could not be subscribed (server error).")
            return
        since, problem = _parse_since(payload.get("since"))
        if problem:
            self._error(sub_id, "invalid_since", problem)
            return
        route = Route(self, sub_id, subscription.entity, list(subscription.channels), conditions, fields)
        if since is not None or conf.durable:
            route.buffer = []  # live frames wait for the subscribed reply (and the replay)
        twin = next((other for other in self.routes.values() if other.same_as(route)), None)
        if twin is not None:
            self._error(sub_id, "duplicate_subscription",
                        f"Subscription {twin.sub_id!r} on this connection is identical.")
            return
        self.routes[sub_id] = route
        if is_remote(subscription):
            self.remote_grants[sub_id] = (payload.get("filters"), server)
        try:
            positions = await get_hub().add(route)
        except REDIS_ERRORS as exc:
            logger.warning("Subscribing %s to %s failed: %s", sub_id, subscription.entity, exc)
            self.routes.pop(sub_id, None)
            self.remote_grants.pop(sub_id, None)
            get_hub().remove(route)
            self._error(sub_id, "unavailable", "The event stream is unavailable; retry later.")
            return
        if self.closing:
            get_hub().remove(route)
            return
        if since is None:
            reply: dict[str, Any] = {"entity": subscription.entity}
            if positions:
                reply["positions"] = _positions_payload(positions)
            self.enqueue(_dumps({"id": sub_id, "type": "subscribed", "payload": reply}))
            self._release(route, {})
        else:
            await self._resume(route, since, positions)

    async def _resume(self, route: Route, since: dict[str, Position], positions: dict[str, Position]) -> None:
        """Send what the client missed since its positions, then the live frames held meanwhile.

        No duplicates (a held frame at or below what was replayed is dropped)
        and no holes (the route was live before the stream was read). Every
        channel of the subscription must be filled for ``recovered: true``: a
        channel ``since`` lacks is one the client cannot say it saw all of (it
        may have seen none of its events), so it is unrecoverable, not skipped;
        so is a glob channel, which has no stream of its own.
        The reply's ``positions`` are where the client stands once the replay
        has arrived: its own for a filled channel, the channel's current one
        for the others.
        """
        replay: list[tuple[str, Position, str]] = []  # encoded at once: the decoded events are not kept
        unfilled: list[str] = []
        conn = get_redis_client().aredis
        prefilter = raw_prefilter(route.conditions)
        read = 0  # payload bytes, over every channel: WS_RECOVERY_MAX_BYTES bounds them all
        for channel in route.channels:
            position = since.get(channel)
            found = await fill(conn, channel, position, conf.ws_recovery_max, conf.ws_recovery_max_bytes - read,
                               prefilter)
            if found is None or position is None:
                unfilled.append(channel)
                continue
            read += found.bytes_read
            positions[channel] = position
            replay += [(channel, pos, _projected(route, data)) for pos, data in found.events if route.matches(data)]
        if read and not self._charge(read / RECOVERY_BYTES_PER_MESSAGE):
            self.abort(TOO_MANY)  # reading history is work the client asked for: it costs like messages
            return
        reply: dict[str, Any] = {"entity": route.entity, "recovered": not unfilled}
        if positions:
            reply["positions"] = _positions_payload(positions)
        self.enqueue(_dumps({"id": route.sub_id, "type": "subscribed", "payload": reply}))
        if unfilled:
            self.gap(route, "unrecoverable")
        last: dict[str, int] = {}
        for channel, position, data_json in replay:
            self._next(route, channel, data_json, position)
            last[channel] = position[0]
        self._release(route, last)

    def _release(self, route: Route, last: dict[str, int]) -> None:
        """Send the live frames held while subscribing, but none at or below ``last[channel]`` (replayed)."""
        held, route.buffer = route.buffer or [], None
        for channel, data_json, live_position in held:
            if live_position is not None and live_position[0] <= last.get(channel, -1):
                continue
            self._next(route, channel, data_json, live_position)

    async def on_complete(self, message: dict[str, Any]) -> None:
        sub_id = message.get("id")
        if not isinstance(sub_id, str):
            self.abort(MALFORMED)
            return
        route = self.routes.pop(sub_id, None)
        self.remote_grants.pop(sub_id, None)
        if route is not None:
            get_hub().remove(route)

    async def _subscription(self, entity: Any) -> type[Subscription] | None:
        if not isinstance(entity, str):
            return None
        found = get_subscription(entity)
        gateway = get_gateway()
        if found is None and gateway is not None and not gateway.discovered.is_set():
            await gateway.ready()  # the first client of a new gateway: its services' entities are on their way
            found = get_subscription(entity)
        return found


def _projected(route: Route, data: Any) -> str:
    """An event as a subscription sends it: only its ``fields`` when it asked for some, encoded."""
    if route.fields is not None and isinstance(data, dict):
        data = {f: data[f] for f in route.fields if f in data}
    return dumps(data).decode()


def _positions_payload(positions: dict[str, Position]) -> dict[str, dict[str, Any]]:
    return {channel: {"offset": offset, "epoch": epoch} for channel, (offset, epoch) in positions.items()}


def _parse_since(raw: Any) -> tuple[dict[str, Position] | None, str]:
    """``{"channel": {"offset": n, "epoch": "..."}}`` -> positions, or the problem."""
    if raw is None:
        return None, ""
    if not isinstance(raw, dict) or len(raw) > 100:
        return None, "since must be an object of channel: {offset, epoch}."
    out: dict[str, Position] = {}
    for channel, position in raw.items():
        offset = position.get("offset") if isinstance(position, dict) else None
        epoch = position.get("epoch") if isinstance(position, dict) else None
        if not isinstance(offset, int) or isinstance(offset, bool) or offset < 0 or not isinstance(epoch, str):
            return None, f"since[{channel!r}] must be {{\"offset\": a non-negative integer, \"epoch\": a string}}."
        out[str(channel)] = (offset, epoch)
    return out, ""


def _parse_fields(subscription: type[Subscription], raw: Any) -> tuple[tuple[str, ...] | None, str]:
    """(fields, "") or (None, the problem): a bounded list of names the Subscription allows."""
    if raw is None:
        return None, ""
    if not isinstance(raw, list) or not all(isinstance(f, str) and 0 < len(f) <= 128 for f in raw):
        return None, "fields must be a list of field names."
    names = tuple(dict.fromkeys(raw))
    if len(names) > conf.ws_max_fields:
        return None, f"fields lists {len(names)} names; the limit is {conf.ws_max_fields}."
    allowed = subscription.fields
    if allowed is not None:
        unknown = [n for n in names if n not in allowed]
        if unknown:
            return None, f"{subscription.entity} has no field {unknown[0]!r}; fields: {', '.join(allowed)}."
    return names, ""


def _same_user(a: Any, b: Any) -> bool:
    """Whether access is unchanged: both anonymous, or the same active, authenticated user."""
    a_in, b_in = bool(getattr(a, "is_authenticated", False)), bool(getattr(b, "is_authenticated", False))
    if not a_in and not b_in:
        return True
    return a_in == b_in and getattr(a, "pk", None) == getattr(b, "pk", None) and bool(getattr(a, "is_active", True))


_TYPES = frozenset({"connection_init", "ping", "pong", "subscribe", "complete"})
