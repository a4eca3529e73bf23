"""The per-process fan-out hub: one Redis Pub/Sub connection for every WebSocket client.

Clients' subscriptions are routes. Each Redis channel is subscribed once
(reference-counted by its routes); an event is matched in process, using an
index on ``eq``/``in`` filters so that each event evaluates only the routes
that can match, and handed to each connection's bounded queue.
"""

from __future__ import annotations

import asyncio
import logging
import time
import weakref
from collections.abc import Callable
from typing import Any, Protocol

from supergraph_messaging import counters, tracing
from supergraph_messaging.conf import conf
from supergraph_messaging.delivery.history import Position, entry_at, fill, position_of
from supergraph_messaging.delivery.subscriber import RedisSubscriber
from supergraph_messaging.exceptions import RedisUnavailable
from supergraph_messaging.realtime.auth import SESSION_ENDED_CHANNEL
from supergraph_messaging.realtime.filters import Condition, match_key
from supergraph_messaging.realtime.replays import SharedPositions, SharedReplays
from supergraph_messaging.redis import serialization
from supergraph_messaging.redis.client import get_redis_client
from supergraph_messaging.redis.errors import REDIS_ERRORS
from supergraph_messaging.redis.keys import is_glob

logger = logging.getLogger("supergraph_messaging.hub")

_HASHABLE = (str, int, float, bool, type(None))
#: Seconds a subscribe waits for the hub's reconnect before it is refused as unavailable.
RECONNECT_WAIT = 1.0
#: Seconds a reconnect's fill may take before the live messages held for it are let go with a gap.
FILL_DEADLINE = 5.0
#: Subscribes of one process reading Redis at once (positions, resumes); the rest wait their turn. Without
#: a bound, a reconnect storm of 10,000 clients opened a pooled Redis connection per subscribe, and a
#: Redis with ``maxclients 4000`` refused 985 of them.
READ_CONCURRENCY = 16


class Sink(Protocol):
    def deliver(self, route: Route, channel: str, data_json: str, position: Position | None = None) -> None: ...

    def gap(self, route: Route, reason: str = "reconnected") -> None: ...


class Route:
    """One client subscription: where matching events go."""

    __slots__ = ("buffer", "channels", "conditions", "entity", "fields", "floor", "generation", "index", "sink",
                 "sink_state", "sub_id")

    def __init__(self, sink: Sink, sub_id: str, entity: str, channels: list[str],
                 conditions: list[Condition], fields: tuple[str, ...] | None) -> None:
        self.sink = sink
        self.sub_id = sub_id
        self.entity = entity
        self.channels = channels
        self.conditions = conditions
        self.fields = fields
        self.index = _pick_index(conditions)
        #: The subscriber connection this route went live on (-1: not live yet).
        self.generation = -1
        #: Live frames held back while a resume replays what the client missed (None: not resuming).
        self.buffer: list[tuple[str, str, Position | None]] | None = None
        #: Per channel, the position the client was told it stands at (or the replay reached): live frames
        #: at or below it were already counted; dropped until one above it arrives (None: nothing to drop).
        self.floor: dict[str, Position] | None = None
        #: Whatever the sink keeps per route (the consumer: the route's frame prefix, encoded once).
        self.sink_state: Any = None

    def same_as(self, other: Route) -> bool:
        """Whether ``other`` would deliver exactly the same frames (a duplicate on one connection)."""
        return (self.entity == other.entity and self.fields == other.fields
                and sorted(map(repr, self.conditions)) == sorted(map(repr, other.conditions)))

    def matches(self, data: Any) -> bool:
        if not self.conditions:
            return True
        if not isinstance(data, dict):
            return False
        return all(c.matches(data) for c in self.conditions)


def _pick_index(conditions: list[Condition]) -> tuple[str, tuple[Any, ...]] | None:
    """The (field, values) to index this route under: its first eq/in on hashable values (not a numeric one:
    an event's ``"20.00"`` must find a route indexed under 20)."""
    for c in conditions:
        if c.numeric:
            continue
        if c.op == "eq" and isinstance(c.value, _HASHABLE):
            return c.field, (match_key(c.value),)
        if c.op == "in" and isinstance(c.value, frozenset):
            return c.field, tuple(c.value)  # already match keys
    return None


class ChannelRoutes:
    """The routes of one channel, indexed for cheap candidate lookup."""

    def __init__(self) -> None:
        self.unindexed: set[Route] = set()
        self.index: dict[str, dict[Any, set[Route]]] = {}
        self.count = 0

    def add(self, route: Route) -> None:
        self.count += 1
        if route.index is None:
            self.unindexed.add(route)
            return
        field, values = route.index
        by_value = self.index.setdefault(field, {})
        for value in values:
            by_value.setdefault(value, set()).add(route)

    def remove(self, route: Route) -> None:
        self.count -= 1
        if route.index is None:
            self.unindexed.discard(route)
            return
        field, values = route.index
        by_value = self.index.get(field, {})
        for value in values:
            routes = by_value.get(value)
            if routes is not None:
                routes.discard(route)
                if not routes:
                    del by_value[value]
        if not by_value:
            self.index.pop(field, None)

    def candidates(self, data: Any) -> list[Route]:
        found = list(self.unindexed)
        if self.index and isinstance(data, dict):
            for field, by_value in self.index.items():
                value = data.get(field, _MISSING)
                if value is _MISSING or not isinstance(value, _HASHABLE):
                    continue
                routes = by_value.get(match_key(value))
                if routes:
                    found.extend(routes)
        return found


_MISSING = object()
DELIVERIES = counters.cell(("ws_deliveries",))


class Hub:
    def __init__(self, url: str | None = None) -> None:
        self.subscriber = RedisSubscriber(url=url, isolate_handlers=False)  # its handler never blocks
        self.subscriber.on_reconnect(self._on_reconnect)
        self._channels: dict[str, ChannelRoutes] = {}
        self._handlers: dict[str, Callable[..., Any]] = {}
        self._routes: set[Route] = set()
        #: The last position seen per durable channel: where a reconnect fills from.
        self.positions: dict[str, Position] = {}
        self._start_lock = asyncio.Lock()
        self._started = False
        #: Held while a subscribe reads Redis (READ_CONCURRENCY).
        self.reads = asyncio.Semaphore(READ_CONCURRENCY)
        #: Subscribes' position reads and resumes' history reads, shared (a reconnect storm's).
        self.position_reads = SharedPositions(self.reads)
        self.replays = SharedReplays(self.reads)
        self.delivered = 0
        #: The subscriber's connection generation whose reconnect has been filled (0: not started). Live
        #: messages of a later one are held until its fill is done, so that they cannot move a channel's
        #: position past the events the fill must still send (33 of 200 were skipped that way).
        self._filled = 0
        self._held: list[tuple[str, str, Any]] = []
        self._held_since = 0.0
        self.forged = 0  # messages whose _position the stream did not confirm (delivered without it)
        #: Connections by session digest, told when their session ends (a logout in any process).
        self._sessions: dict[str, weakref.WeakSet[Any]] = {}
        self.subscriber.add_handler(SESSION_ENDED_CHANNEL, self._on_session_ended)

    @property
    def channels(self) -> dict[str, int]:
        return {name: routes.count for name, routes in self._channels.items()}

    async def add(self, route: Route) -> dict[str, Position]:
        """Make ``route`` live; with durable delivery, return the position of each of its exact channels
        as of now (the hub keeps them too: a reconnect fills every channel from one, never a gap for a
        channel that had no event yet).

        Raises :class:`RedisUnavailable` while the hub has no connection (Redis down, or a reconnect
        that does not end within ``RECONNECT_WAIT``): a subscription is refused as ``unavailable`` rather
        than answered and then broken.
        """
        if not (self._started and self.subscriber.running):  # the lock only until the first start is done
            async with self._start_lock:
                if not self.subscriber.running:
                    await self.subscriber.start()
                    self._filled = self.subscriber.generation  # the first connection has nothing to fill
                self._started = True
        # A reconnect under way (a Redis restart) usually ends within a second: wait that long for it.
        if not await self.subscriber.wait_connected(RECONNECT_WAIT):
            raise RedisUnavailable("the hub is reconnecting to Redis")
        self._routes.add(route)
        counters.incr(("ws_subscribed", route.entity))
        new = []
        for channel in route.channels:
            routes = self._channels.get(channel)
            if routes is None:
                routes = self._channels[channel] = ChannelRoutes()
                handler = self._handlers[channel] = self._make_handler(channel)
                self.subscriber.add_handler(channel, handler)
                new.append(channel)
            routes.add(route)
        if new:
            try:
                await self.subscriber.wait_subscribed(*new)
            except TimeoutError as exc:
                raise RedisUnavailable(f"Redis did not confirm the subscription to {', '.join(new)} in time") from exc
        route.generation = self.subscriber.generation
        if not conf.durable:
            return {}
        exact = [c for c in route.channels if not is_glob(c)]
        positions = await self.position_reads.read(get_redis_client().aredis, exact)
        for channel, position in positions.items():
            self.positions.setdefault(channel, position)  # one dispatched meanwhile is newer
        return positions

    def watch_session(self, digest: str, connection: Any) -> None:
        """``connection.session_ended()`` when a logout anywhere ends the session ``digest`` names."""
        self._sessions.setdefault(digest, weakref.WeakSet()).add(connection)

    def unwatch_session(self, digest: str, connection: Any) -> None:
        watchers = self._sessions.get(digest)
        if watchers is not None:
            watchers.discard(connection)
            if not watchers:
                del self._sessions[digest]

    async def _on_session_ended(self, data: Any) -> None:
        digest = data.get("session") if isinstance(data, dict) else None
        if isinstance(digest, str):
            for connection in list(self._sessions.get(digest, ())):
                connection.session_ended()

    def remove(self, route: Route) -> None:
        if route not in self._routes:
            return
        self._routes.discard(route)
        counters.incr(("ws_unsubscribed", route.entity))
        for channel in route.channels:
            routes = self._channels.get(channel)
            if routes is None:
                continue
            routes.remove(route)
            if routes.count <= 0:
                del self._channels[channel]
                self.subscriber.remove_handler(channel, self._handlers.pop(channel))

    def _make_handler(self, key: str) -> Callable[..., Any]:
        async def handler(data: Any, channel: str) -> None:
            holding = self._filled and self.subscriber.generation > self._filled and conf.durable
            if holding and self._hold(key, channel, data):
                return
            position = position_of(data)
            if position is not None and not self._follows(channel, position):
                data = await self._confirmed(channel, position, data)
            self.dispatch(key, channel, data)

        handler.untraced = True  # type: ignore[attr-defined]  # the deliver span is the hub's (dispatch)
        return handler

    def _hold(self, key: str, channel: str, data: Any) -> bool:
        """Keep a live message until the reconnect's fill is done; False when the fill is overdue (then
        everything held is let go, and the routes get a gap)."""
        now = time.monotonic()
        if not self._held:
            self._held_since = now
        if now - self._held_since < FILL_DEADLINE and len(self._held) < conf.ws_recovery_max:
            self._held.append((key, channel, data))
            return True
        logger.warning("The hub's reconnect fill did not finish within %s s; sending a gap.", FILL_DEADLINE)
        self._filled = self.subscriber.generation
        for route in self._routes:
            route.sink.gap(route)
        self._release(set())
        return False

    def _release(self, unfilled: set[str]) -> None:
        held, self._held = self._held, []
        for key, channel, data in held:
            position = position_of(data)
            known = self.positions.get(channel)
            if position is not None and known is not None and channel not in unfilled \
                    and position[1] == known[1] and position[0] <= known[0]:
                continue  # the fill sent it already
            self.dispatch(key, channel, data)

    def _follows(self, channel: str, position: Position) -> bool:
        """The position is the next one after the last this hub saw: no reason to doubt it."""
        known = self.positions.get(channel)
        return known is not None and known[1] == position[1] and position[0] == known[0] + 1

    async def _confirmed(self, channel: str, position: Position, data: Any) -> Any:
        """``data`` if its ``_position`` is the stream's entry with the same payload, else ``data`` without
        it: anyone who can PUBLISH could otherwise move every client's resume point (an offset of 10**12
        made a resume skip all it had missed and say ``recovered: true``)."""
        try:
            real = await entry_at(get_redis_client().aredis, channel, position)
        except REDIS_ERRORS:
            real = None
        stripped = {k: v for k, v in data.items() if k != "_position"}
        if real is not None and real == stripped:
            return data
        self.forged += 1
        if self.forged == 1 or self.forged % 1000 == 0:
            logger.warning("A message on %r carries a _position the stream does not have (%d so far); it is "
                           "delivered without one.", channel, self.forged)
        return stripped

    def dispatch(self, key: str, channel: str, data: Any) -> None:
        routes = self._channels.get(key)
        if routes is None:
            return
        if tracing.active():  # one "deliver" span per event, the child of its traceparent
            with tracing.span(f"{channel} deliver", data.get("_meta") if isinstance(data, dict) else None,
                              "consumer", **{"messaging.destination.name": channel}) as span:
                before = self.delivered
                self._dispatch(routes, channel, data)
                span.set_attribute("supergraph_messaging.deliveries", self.delivered - before)
            return
        self._dispatch(routes, channel, data)

    def _dispatch(self, routes: ChannelRoutes, channel: str, data: Any) -> None:
        position = position_of(data)
        if position is not None:
            self.positions[channel] = position
            # Clients get it as the frame's offset and epoch; in data it would be a field no filter,
            # field list or schema knows.
            data = {k: v for k, v in data.items() if k != "_position"}
        encoded: dict[tuple[str, ...] | None, str] = {}
        for route in routes.candidates(data):
            if route.conditions and not route.matches(data):
                continue
            text = encoded.get(route.fields)
            if text is None:
                projected = data
                if route.fields is not None and isinstance(data, dict):
                    projected = {f: data[f] for f in route.fields if f in data}
                text = encoded[route.fields] = serialization.dumps(projected).decode()
            self.delivered += 1
            DELIVERIES[0] += 1
            route.sink.deliver(route, channel, text, position)

    async def _on_reconnect(self) -> None:
        """Fill what routes live on an earlier connection missed from the streams; a gap where that fails.

        Live messages of the new connection are held meanwhile (see ``_filled``) and sent after the fill,
        but none the fill sent already.
        """
        current = self.subscriber.generation
        stale = [r for r in self._routes if 0 <= r.generation < current]
        for route in stale:
            route.generation = current
        unfilled: set[str] = set()
        try:
            conn = get_redis_client().aredis
            for channel in {c for r in stale for c in r.channels}:
                found = await fill(conn, channel, self.positions.get(channel), conf.ws_recovery_max,
                                   conf.ws_recovery_max_bytes)
                if found is None:
                    unfilled.add(channel)
                    continue
                for _position, data in found.events:
                    self.dispatch(channel, channel, data)
        finally:
            if self._filled < current:
                self._filled = current
                for route in stale:
                    if unfilled & set(route.channels):
                        route.sink.gap(route)
                self._release(unfilled)

    async def close(self) -> None:
        await self.subscriber.stop()


_hubs: dict[asyncio.AbstractEventLoop, Hub] = {}


def get_hub() -> Hub:
    """The hub of the running event loop (one per process under an ASGI server)."""
    loop = asyncio.get_running_loop()
    hub = _hubs.get(loop)
    if hub is None:
        for old in [lp for lp in _hubs if lp.is_closed()]:
            del _hubs[old]
        hub = _hubs[loop] = Hub()
    return hub
