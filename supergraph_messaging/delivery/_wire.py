"""The pipelined publisher's socket, written and read without redis-py's per-call machinery.

redis-py is built for a request and its reply: asking whether a reply has
arrived (``can_read(0)``) switches the socket to non-blocking and back and
raises and catches a timeout when nothing is there, and every ``sendall`` on
a socket with a timeout polls before it writes. On a request thread whose
caches went cold since the last event, that was 40-110 µs per event
(measured inside DRF requests). The socket is non-blocking already (that is
how Python implements socket timeouts), so here a send is one ``write`` and
a look for replies is one ``read``, which also sees the server's close.

redis-py still opens the connection (AUTH, SELECT, the client name) and packs
the commands; only PUBLISH commands travel here, and their replies are single
lines: an integer, or an error. TLS connections keep redis-py's path
(:func:`open_wire` returns ``None`` for them).
"""

from __future__ import annotations

import os
import select
import socket
from typing import Any

import redis


class ClosedBeforeSend(redis.ConnectionError):
    """The connection was found closed before any byte of the command was written: sending it again on
    a new connection cannot duplicate it."""


class Wire:
    """One connected socket of a redis-py ``Connection``; its byte stream is this object's from now on."""

    def __init__(self, sock: socket.socket, timeout: float | None) -> None:
        self.sock = sock
        self.fd = sock.fileno()
        self.timeout = timeout
        self._buffer = b""
        # Registered once: asking it costs one poll(2), no exception, and it reports only the
        # server's close (or a socket error), never that replies are waiting.
        self._hangup = select.poll()
        self._hangup.register(self.fd, select.POLLRDHUP)

    def closed_by_peer(self) -> bool:
        """Whether the server closed the connection (its replies before the close are still readable)."""
        return bool(self._hangup.poll(0))

    def send(self, packed: bytes) -> None:
        """Write all of ``packed``; waits (up to the socket timeout) only while the kernel's buffer is full."""
        view = memoryview(packed)
        while view:
            try:
                view = view[os.write(self.fd, view):]
            except BlockingIOError:
                if not self._poll(select.POLLOUT, self.timeout):
                    raise redis.TimeoutError("Timeout writing to the socket") from None
            except OSError as exc:
                error = ClosedBeforeSend if len(view) == len(packed) else redis.ConnectionError
                raise error(f"Error while writing to the socket: {exc}") from exc

    def replies(self, wait: float = 0.0) -> list[int | redis.ResponseError]:
        """The replies that have arrived, waiting up to ``wait`` seconds for the first one.

        Raises ``ConnectionError`` when the server closed the connection or
        sent something that is not a PUBLISH reply.
        """
        if wait > 0 and b"\n" not in self._buffer and not self._poll(select.POLLIN, wait):
            return []
        while True:
            try:
                chunk = os.read(self.fd, 65536)
            except BlockingIOError:
                break
            except OSError as exc:
                raise redis.ConnectionError(f"Error while reading from the socket: {exc}") from exc
            if not chunk:
                raise redis.ConnectionError("Connection closed by server.")
            self._buffer += chunk
            if len(chunk) < 65536:
                break
        return self._parse()

    def _parse(self) -> list[int | redis.ResponseError]:
        out: list[int | redis.ResponseError] = []
        buffer = self._buffer
        start = 0
        while (end := buffer.find(b"\r\n", start)) >= 0:
            line = buffer[start:end]
            start = end + 2
            kind, body = line[:1], line[1:]
            if kind == b":" and body.lstrip(b"-").isdigit():
                out.append(int(body))
            elif kind == b"-":
                out.append(redis.ResponseError(body.decode(errors="replace")))
            else:
                raise redis.ConnectionError(f"unexpected reply {line[:80]!r} on the publishing connection")
        self._buffer = buffer[start:]
        return out

    def _poll(self, events: int, timeout: float | None) -> bool:
        """Whether ``events`` happened within ``timeout`` seconds (``None``: no limit)."""
        poller = select.poll()
        poller.register(self.fd, events)
        return bool(poller.poll(None if timeout is None else timeout * 1000))


def open_wire(conn: Any) -> Wire | None:
    """The :class:`Wire` of a connected redis-py connection, or ``None`` where its socket is not a
    plain TCP or Unix socket (TLS encrypts in user space, so its bytes are not the socket's)."""
    sock = getattr(conn, "_sock", None)
    if type(sock) is not socket.socket:
        return None
    return Wire(sock, sock.gettimeout())
