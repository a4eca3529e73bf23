"""Subscribe, resume and complete: what a connection's subscriptions are, and what they are sent.

A ``subscribe`` is parsed, authorized by its :class:`Subscription`, added
to the hub, then answered: ``subscribed`` at once, or after a resume has
replayed what the client missed since its positions. Live events that
arrive meanwhile are held and sent after the replay, with no duplicate and
no hole.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from supergraph_messaging.conf import conf
from supergraph_messaging.delivery.history import Position
from supergraph_messaging.realtime.filters import Refused, raw_prefilter
from supergraph_messaging.realtime.hub import Route, get_hub
from supergraph_messaging.realtime.protocol import (
    DUPLICATE_ID,
    MALFORMED,
    RECOVERY_BYTES_PER_MESSAGE,
    TOO_MANY,
    UNAUTHORIZED,
    frame,
    next_prefix,
    parse_fields,
    parse_since,
    positions_payload,
    qualname,
    quoted,
    subscribe_request,
)
from supergraph_messaging.realtime.subscriptions import Directory
from supergraph_messaging.redis.client import get_redis_client
from supergraph_messaging.redis.errors import REDIS_ERRORS

logger = logging.getLogger("supergraph_messaging.ws")


class SubscribingMixin:
    """The subscriptions of :class:`~.consumer.SubscriptionConsumer`, and the hub's sink."""

    # Provided by the consumer.
    user: Any
    acked: bool
    closing: bool
    directory: Directory
    routes: dict[str, Route]
    grants: dict[str, Any]
    enqueue: Callable[[str], None]
    abort: Callable[[int], None]
    error: Callable[[str, str, str], None]
    charge: Callable[[float], bool]
    refresh_user: Callable[[], Awaitable[None]]

    async def on_subscribe(self, message: dict[str, Any]) -> None:
        request = self._admitted(message)
        if request is None:
            return
        sub_id, payload = request
        authorized = await self._authorized(sub_id, payload)
        if authorized is None:
            return
        route, grant = authorized
        since, problem = parse_since(payload.get("since"))
        if problem:
            self.error(sub_id, "invalid_since", problem)
            return
        if since is not None or conf.durable:
            route.buffer = []  # live frames wait for the subscribed reply (and the replay)
        twin = next((other for other in self.routes.values() if other.same_as(route)), None)
        if twin is not None:
            self.error(sub_id, "duplicate_subscription",
                       f"Subscription {twin.sub_id!r} on this connection is identical.")
            return
        self.routes[sub_id] = route
        if grant is not None:  # only what a re-check needs is kept: an idle connection stays small
            self.grants[sub_id] = grant
        try:
            positions = await get_hub().add(route)
        except REDIS_ERRORS as exc:
            logger.warning("Subscribing %s to %s failed: %s", sub_id, route.entity, exc)
            self.routes.pop(sub_id, None)
            self.grants.pop(sub_id, None)
            get_hub().remove(route)
            self.error(sub_id, "unavailable", "The event stream is unavailable; retry later.")
            return
        if self.closing:
            get_hub().remove(route)
        elif since is None:
            self._subscribed(route, positions)
        else:
            await self._resume(route, since, positions)

    def _admitted(self, message: dict[str, Any]) -> tuple[str, dict[str, Any]] | None:
        """The frame's id and payload if this connection may subscribe now; else it is closed."""
        if not self.acked:
            self.abort(UNAUTHORIZED)
            return None
        request = subscribe_request(message)
        if request is None:
            self.abort(MALFORMED)
        elif request[0] in self.routes:
            self.abort(DUPLICATE_ID)
        elif len(self.routes) >= conf.ws_max_subscriptions:
            self.abort(TOO_MANY)
        else:
            return request
        return None

    async def _authorized(self, sub_id: str, payload: dict[str, Any]) -> tuple[Route, Any] | None:
        """The route this subscribe asks for, as its Subscription allows it to the user as of now, and what
        its re-checks need (:meth:`Subscription.grant`); or None, the error frame sent."""
        entity = payload.get("entity")
        subscription = await self.directory.find(entity) if isinstance(entity, str) else None
        if subscription is None:
            self.error(sub_id, "unknown_entity", f"Unknown entity {entity!r}{self.directory.unknown_hint()}.")
            return None
        fields, problem = parse_fields(subscription, payload.get("fields"))
        if problem:
            self.error(sub_id, "invalid_fields", problem)
            return None
        await self.refresh_user()  # access is decided by the user as of now, not as of connect
        try:
            server = await subscription.authorize(self.user, payload.get("filters"))
            conditions = subscription.parse_filters(payload.get("filters"), conf.ws_max_in_values)
            conditions += subscription.parse_filters(server, 10**6, declared=False)
        except Refused as exc:
            self.error(sub_id, exc.code, str(exc))
            return None
        except Exception:
            # A bug in the Subscription's own hooks fails this subscription only, never the
            # connection and the client's other subscriptions.
            logger.exception("%s: a permission check or server filter raised on subscribe %r.",
                             qualname(subscription), sub_id)
            self.error(sub_id, "server_error", f"{subscription.entity} could not be subscribed (server error).")
            return None
        route = Route(self, sub_id, subscription.entity, list(subscription.channels), conditions, fields)
        return route, subscription.grant(payload.get("filters"), server)

    def _subscribed(self, route: Route, positions: dict[str, Position]) -> None:
        reply: dict[str, Any] = {"entity": route.entity}
        if positions:
            reply["positions"] = positions_payload(positions)
        self.enqueue(frame({"id": route.sub_id, "type": "subscribed", "payload": reply}))
        self._release(route, positions)

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
        floor: dict[str, Position] = {}
        conn = get_redis_client().aredis
        prefilter = raw_prefilter(route.conditions)
        read = 0  # payload bytes, over every channel: WS_RECOVERY_MAX_BYTES bounds them all
        hub = get_hub()
        for channel in route.channels:
            position = since.get(channel)
            # positions[channel]: where the channel stood when the route went live (see .replays).
            replayed = await hub.replays.replay(conn, channel, position, positions.get(channel),
                                                conf.ws_recovery_max, conf.ws_recovery_max_bytes - read, prefilter)
            if replayed is None or position is None:
                unfilled.append(channel)
                if channel in positions:
                    floor[channel] = positions[channel]
                continue
            read += replayed.found.bytes_read
            positions[channel] = position
            floor[channel] = (max(replayed.found.upto, position[0]), position[1])
            texts = replayed.texts(route.fields)
            replay += [(channel, pos, texts[i]) for i, (pos, data) in enumerate(replayed.found.events)
                       if route.matches(data)]
        if read and not self.charge(read / RECOVERY_BYTES_PER_MESSAGE):
            self.abort(TOO_MANY)  # reading history is work the client asked for: it costs like messages
            return
        reply: dict[str, Any] = {"entity": route.entity, "recovered": not unfilled}
        if positions:
            reply["positions"] = positions_payload(positions)
        self.enqueue(frame({"id": route.sub_id, "type": "subscribed", "payload": reply}))
        if unfilled:
            self.gap(route, "unrecoverable")
        for channel, position, data_json in replay:
            self._next(route, channel, data_json, position)
        self._release(route, floor)

    def _release(self, route: Route, floor: dict[str, Position]) -> None:
        """Send the live frames held while subscribing, then any later ones, but none at or below
        ``floor[channel]``: what the ``subscribed`` reply's position or the replay already covered.

        The position was read after the route went live, but on another socket than the hub's Pub/Sub
        one: an event it counts may still be on its way to the route. Sent, a client told "you stand
        at 7" got offset 7 again (1 of 40 subscribes did, while events came every 2 ms)."""
        held, route.buffer = route.buffer or [], None
        route.floor = dict(floor) if floor else None
        for channel, data_json, live_position in held:
            self.deliver(route, channel, data_json, live_position)

    async def on_complete(self, message: dict[str, Any]) -> None:
        sub_id = message.get("id")
        if not isinstance(sub_id, str):
            self.abort(MALFORMED)
            return
        route = self.routes.pop(sub_id, None)
        self.grants.pop(sub_id, None)
        if route is not None:
            get_hub().remove(route)

    # -- the hub's sink -------------------------------------------------------
    def deliver(self, route: Route, channel: str, data_json: str, position: Position | None = None) -> None:
        if route.buffer is not None:  # a resume is replaying what the client missed: live frames wait
            route.buffer.append((channel, data_json, position))
            return
        if route.floor is not None and position is not None and self._covered(route, channel, position):
            return
        self._next(route, channel, data_json, position)

    @staticmethod
    def _covered(route: Route, channel: str, position: Position) -> bool:
        """Whether ``position`` is at or below the route's floor for ``channel`` (see :meth:`_release`); the
        first frame above it (or of another epoch) lifts that floor, since every later one is newer."""
        floor = route.floor
        assert floor is not None
        below = floor.get(channel)
        if below is None:
            return False
        if position[1] == below[1] and position[0] <= below[0]:
            return True
        del floor[channel]
        if not floor:
            route.floor = None
        return False

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
            prefix = route.sink_state = next_prefix(route)
        where = quoted(channel)
        if position is not None:
            where = f'{where},"offset":{int(position[0])},"epoch":{quoted(position[1])}'
        self.enqueue(f'{prefix}{where},"data":{data_json}}}}}')

    def gap(self, route: Route, reason: str = "reconnected") -> None:
        self.enqueue(frame({"id": route.sub_id, "type": "gap", "payload": {"reason": reason}}))
