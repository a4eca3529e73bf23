"""The Channels consumer at ``/subscribe``: the receive loop, frames in, connect and disconnect.

What goes out (the bounded queue, the close, pings: a client that stops
answering them is closed with 4008, since under daphne sends never block)
lives in :mod:`.outgoing`, who the client is in :mod:`.access`, its
subscriptions in :mod:`.subscribing`, the frames in :mod:`.protocol`.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import os
from typing import Any

from channels.consumer import get_handler_name
from channels.exceptions import StopConsumer
from channels.generic.websocket import AsyncWebsocketConsumer
from django.contrib.auth.models import AnonymousUser

from supergraph_messaging import counters
from supergraph_messaging.conf import conf
from supergraph_messaging.realtime.access import AccessMixin
from supergraph_messaging.realtime.auth import session_digest
from supergraph_messaging.realtime.flow_control import FlowControl, TokenBucket
from supergraph_messaging.realtime.hub import Route, get_hub
from supergraph_messaging.realtime.outgoing import OutgoingMixin, eagerly
from supergraph_messaging.realtime.protocol import (
    CLIENT_TYPES,
    INIT_TIMEOUT,
    MALFORMED,
    TOO_MANY,
    error_frame,
    frame,
    qualname,
)
from supergraph_messaging.realtime.subscribing import SubscribingMixin
from supergraph_messaging.realtime.subscriptions import Directory

logger = logging.getLogger("supergraph_messaging.ws")

#: Connection ids: this process's random tag and a count (unique across processes and restarts; a
#: uuid4 per connection read the OS's random source on every connect, for an id only logs and the
#: ack show).
PROCESS_ID = os.urandom(4).hex()
_connections = itertools.count(1)
CONNECTED, DISCONNECTED = ("ws_connected",), ("ws_disconnected",)


class SubscriptionConsumer(SubscribingMixin, AccessMixin, OutgoingMixin, AsyncWebsocketConsumer):  # type: ignore[misc]  # channels ships no types
    """One ``/subscribe`` connection: frames in, a bounded queue of frames out, pings."""

    # Events reach a connection through the per-process hub, never through a channel layer: an
    # alias no project configures spares each connection a channel (with channels-redis, a Redis
    # receive) that nothing would ever send to.
    channel_layer_alias = "supergraph_messaging.no-channel-layer"

    def __init__(self, directory: Directory | None = None, **kwargs: Any) -> None:
        """``directory``: where entities are found (``as_asgi(directory=...)``; a gateway passes its own)."""
        super().__init__(**kwargs)
        self.directory = directory if directory is not None else Directory()

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
        self.connection_id = f"{PROCESS_ID}_{next(_connections)}"
        self.outgoing: list[str] = []
        #: Whether a send is under way (on the caller's stack or in ``sending``, the task that waits).
        self.flushing = False
        self.sending: asyncio.Task[None] | None = None
        #: The close code :meth:`abort` queued behind the frames being sent.
        self.close_code: int | None = None
        self.bucket = TokenBucket(conf.ws_max_messages_per_second)
        try:
            while True:
                message = await receive()
                if message.get("type") == "websocket.receive" and not self.charge(1.0):
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

    def charge(self, cost: float) -> bool:
        """Take ``cost`` messages' worth from the connection's rate; False when it is overdrawn."""
        return self.bucket.take(cost, conf.ws_max_messages_per_second)

    def _handle(self, message: dict[str, Any]) -> None:
        """Handle ``message`` after those before it: on this stack until a handler first waits (an ack, a
        pong, a subscribe up to its Redis read), then in ``handling``, a task that ends with the frames.
        A task per frame was an eighth of a connect and subscribe's server time."""
        self.frames.append(message)
        if self.handling is None:  # else that task takes it (only the receive loop calls this: no re-entry)
            self.handling = eagerly(self._handle_frames(), isolated=True)

    async def _handle_frames(self) -> None:
        try:
            while self.frames:
                await self.dispatch(self.frames.pop(0))
        except StopConsumer:
            self.frames.clear()
        except OSError:
            # The client left while a frame was handled (the server's send raised, as ASGI allows):
            # there is no one left to answer.
            self.frames.clear()
            self.closing = True
        except Exception:
            # Channels would let this end the connection with a traceback in the log; so do we,
            # but the client gets a close (1011), never the traceback.
            logger.exception("%s: handling a frame failed; closing.", qualname(type(self)))
            self.frames.clear()
            self.abort(1011)
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
            raise ValueError(f"{qualname(type(self))} has no handler for message type {message['type']!r}.")
        await handler(message)

    async def websocket_disconnect(self, message: dict[str, Any]) -> None:
        """Channels' version, without the same hop (and without groups: the hub holds the routes)."""
        if not self.closing:  # the client's close (a server's close was counted by abort)
            counters.incr(("ws_closes", str(message.get("code", 1000)), "client"))
        await self.disconnect(message.get("code", 1000))
        raise StopConsumer

    async def sgm_rate_exceeded(self, message: dict[str, Any]) -> None:
        self.abort(TOO_MANY)

    async def connect(self) -> None:
        self.user: Any = self.scope.get("user") or AnonymousUser()
        self.token: str | None = None
        self.acked = False
        self.routes: dict[str, Route] = {}
        self.flow = FlowControl(conf.ws_max_buffered_bytes)
        self.last_ping = 0.0
        self.rechecking: asyncio.Task[None] | None = None
        self.grants: dict[str, Any] = {}
        self.directory.connected()
        counters.incr(CONNECTED)
        self.timers: dict[str, asyncio.TimerHandle] = {
            "init": asyncio.get_running_loop().call_later(conf.ws_init_timeout, self._init_timed_out)}
        session_key = getattr(self.scope.get("session"), "session_key", None)
        self.session_digest = session_digest(session_key) if session_key else None
        if self.session_digest is not None:
            get_hub().watch_session(self.session_digest, self)
        await self.accept()

    async def disconnect(self, code: int) -> None:
        counters.incr(DISCONNECTED)
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

    def _init_timed_out(self) -> None:
        if not self.acked:
            self.abort(INIT_TIMEOUT)

    # -- incoming -----------------------------------------------------------
    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        if self.closing:
            return
        limit = conf.ws_max_message_bytes
        # UTF-8 takes at most 4 bytes a character: most frames need no encode to be measured.
        if text_data is None or (len(text_data) * 4 > limit and len(text_data.encode()) > limit):
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
        handler = getattr(self, "on_" + message["type"], None) if message["type"] in CLIENT_TYPES else None
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

    async def on_ping(self, message: dict[str, Any]) -> None:
        payload = message.get("payload")
        self.enqueue(frame({"type": "pong", "payload": payload} if isinstance(payload, dict) else {"type": "pong"}))

    async def on_pong(self, message: dict[str, Any]) -> None:
        payload = message.get("payload")
        ping_id = payload.get("id") if isinstance(payload, dict) else None
        if ping_id is None:
            self.flow.on_bare_pong()  # alive; acknowledges nothing
            return
        # Only a pong echoing an outstanding ping's id acknowledges bytes; other ids are ignored.
        self.flow.on_pong(ping_id)

    def error(self, sub_id: str, code: str, text: str) -> None:
        """An ``error`` frame for one subscription; the connection stays open."""
        self.enqueue(error_frame(sub_id, code, text))

