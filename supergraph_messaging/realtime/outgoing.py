"""A ``/subscribe`` connection's outgoing side: the bounded queue, sending, the close, pings.

Every outgoing frame goes through one bounded queue per connection, so
frames stay in order and a client that cannot keep up is closed with 4008
instead of growing the server's memory. Frames are sent on the caller's
stack until the server's ``send`` first waits (a task takes over only
then), and the close goes through the same path, so nothing is ever sent
after it.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from supergraph_messaging import counters
from supergraph_messaging.conf import conf
from supergraph_messaging.delivery.handlers import resumed
from supergraph_messaging.realtime.flow_control import FlowControl
from supergraph_messaging.realtime.protocol import REASONS, TOO_SLOW, frame

logger = logging.getLogger("supergraph_messaging.ws")

FRAMES_SENT = counters.cell(("ws_frames_sent",))


async def _drive(awaitable: Awaitable[None]) -> None:
    await awaitable


def eagerly(coro: Coroutine[Any, Any, None], isolated: bool = False) -> asyncio.Task[None] | None:
    """Run ``coro`` on the caller's stack until it first waits, then in a task (returned); None if it
    finished without waiting. What Python 3.12's eager tasks do, for 3.11: most sends and most frames
    never wait, and a task each was a fifth of a broadcast's and an eighth of a subscribe's time.

    ``isolated``: run it in a copy of the caller's context variables, kept by the task, as a task of
    its own would. For code that may set one: asgiref marks its database thread busy in a context
    variable, and set in the caller's, the connection's next database call found it still marked and
    refused. Sends set none, and skip the copy."""
    context = contextvars.copy_context() if isolated else None
    try:
        waiting_on = coro.send(None) if context is None else context.run(coro.send, None)
    except StopIteration:
        return None
    return asyncio.get_running_loop().create_task(_drive(resumed(coro, waiting_on)), context=context)


class OutgoingMixin:
    """Queueing, sending and closing, for :class:`~.consumer.SubscriptionConsumer`."""

    # Provided by the consumer.
    base_send: Callable[[dict[str, Any]], Awaitable[None]]
    connection_id: str
    closing: bool
    acked: bool
    outgoing: list[str]
    flushing: bool
    sending: asyncio.Task[None] | None
    close_code: int | None
    flow: FlowControl
    last_ping: float
    timers: dict[str, asyncio.TimerHandle]
    _release_routes: Callable[[], None]

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
        if not self.flushing:
            self._start_sending()
        if pinging and self.acked and self.flow.wants_ping():
            self._send_ping()

    def _start_sending(self) -> None:
        """Send what is queued on the caller's stack until the server's ``send`` first waits; a task sends
        the rest. Under daphne ``send`` never waits, and under uvicorn or granian only when the socket's
        buffer is full, so a broadcast to 10,000 sockets usually creates no task at all (one task per
        delivery was a fifth of the fan-out's time)."""
        self.sending = eagerly(self._send_outgoing())

    async def _send_outgoing(self) -> None:
        """Send what is queued, in order, straight to the server (Channels' ``send`` adds two calls and
        a dict per frame), then the close if :meth:`abort` asked for one: nothing is ever sent after
        it (uvicorn raises on that). It ends when the queue is empty (idle costs nothing)."""
        self.flushing = True
        send, outgoing = self.base_send, self.outgoing
        try:
            while outgoing:
                try:
                    await send({"type": "websocket.send", "text": outgoing.pop(0)})
                    FRAMES_SENT[0] += 1
                except Exception as exc:  # never into the caller: the hub is delivering to every connection
                    if not self._refused(exc):
                        logger.exception("Sending to WebSocket connection %s failed; closing it.",
                                         self.connection_id)
                        self.abort(1011)  # a send is under way (this one): abort only queues the close
            if self.close_code is not None:
                code, self.close_code = self.close_code, None
                await self._send_close(code)
        finally:
            self.flushing = False
            self.sending = None

    def _refused(self, exc: Exception) -> bool:
        """True when ``exc`` says the server takes no more frames on this connection: the client is gone
        (an OSError subclass, as ASGI allows: uvicorn's ClientDisconnected) or the server closed it itself
        (uvicorn's RuntimeError after its own close, at shutdown). The disconnect event follows."""
        if not isinstance(exc, (OSError, RuntimeError)):
            return False
        logger.debug("WebSocket connection %s takes no more frames: %r", self.connection_id, exc)
        self.closing = True
        self.close_code = None
        self.outgoing.clear()
        return True

    async def _send_close(self, code: int) -> None:
        try:
            await self.base_send({"type": "websocket.close", "code": code})
        except (OSError, RuntimeError) as exc:
            self._refused(exc)

    def abort(self, code: int) -> None:
        """Close with ``code`` once; callable from sync code too (hub callbacks, timers).

        What is still queued is dropped (the close says why; a client closed 4008 could not take it
        anyway). The close goes out behind a send under way on this stack, or at once if a send is
        waiting for the client to read (uvicorn's and granian's ``send`` wait; daphne's never does).
        """
        if self.closing:
            return
        self.closing = True
        logger.info("Closing WebSocket connection %s with code %d (%s).", self.connection_id, code,
                    REASONS.get(code, "protocol"))
        counters.incr(("ws_closes", str(code), "server"))
        if self.outgoing:
            counters.incr(("ws_frames_dropped",), len(self.outgoing))
        self._release_routes()
        self.outgoing.clear()
        if self.sending is not None:
            self.sending.cancel()  # it waits for a client that may never read; its queue is empty now
            asyncio.get_running_loop().create_task(self._send_close(code))
            return
        self.close_code = code
        if not self.flushing:
            self._start_sending()

    def _send_ping(self) -> None:
        self.enqueue(frame({"type": "ping", "payload": {"id": self.flow.new_ping()}}))

    def later(self, name: str, delay: float, callback: Any) -> None:
        if not self.closing:
            self.timers[name] = asyncio.get_running_loop().call_later(delay, callback)

    def ping_tick(self) -> None:
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
        self.later("ping", min(interval, timeout) / 2, self.ping_tick)
