"""N WebSocket clients in one process; prints per-step delivery counts and latencies as JSON.

    fanout_client.py URL ORIGIN N [CONNECTIONS_PER_SECOND]

A lean client on purpose: an ``asyncio.Protocol`` speaking just enough of
RFC 6455 (the upgrade, unfragmented frames, masked sends) and of the
``/subscribe`` protocol (init, one subscription, pongs). A client library
spends tens of microseconds per message; at 10,000 sockets the clients
share this machine's two cores with the server, so what they spend is
latency the benchmark would charge to the server.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import sys
import time
from collections import defaultdict
from typing import Any
from urllib.parse import urlsplit

INIT = json.dumps({"type": "connection_init", "payload": {}})
SUBSCRIBE = json.dumps({"id": "1", "type": "subscribe", "payload": {"entity": "CameraEvents"}})
#: How an event frame of that subscription starts (the server writes its frames' heads compactly).
NEXT = b'{"id":"1","type":"next"'


def encode_frame(payload: bytes, opcode: int = 1) -> bytes:
    """A masked, final client frame."""
    mask = os.urandom(4)
    length = len(payload)
    if length < 126:
        head = bytes([0x80 | opcode, 0x80 | length])
    elif length < 65536:
        head = bytes([0x80 | opcode, 0x80 | 126]) + length.to_bytes(2, "big")
    else:
        head = bytes([0x80 | opcode, 0x80 | 127]) + length.to_bytes(8, "big")
    repeated = (mask * (length // 4 + 1))[:length]
    masked = (int.from_bytes(payload, "big") ^ int.from_bytes(repeated, "big")).to_bytes(length, "big")
    return head + mask + masked


class Fleet:
    """What all connections of this process share: the step stats and the counters."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.stats: dict[int, list[Any]] = defaultdict(lambda: [0, []])
        self.marks: dict[int, int] = defaultdict(int)
        self.subscribed = 0
        self.ready = asyncio.Event()

    def on_next(self, data: dict[str, Any]) -> None:
        if "mark" in data:
            step = data["mark"]
            self.marks[step] += 1
            if self.marks[step] == self.n:
                count, latencies = self.stats[step]
                latencies.sort()
                print(json.dumps({"step": step, "count": count,
                                  "p50": latencies[len(latencies) // 2] if latencies else None,
                                  "p99": latencies[int(len(latencies) * 0.99)] if latencies else None}),
                      flush=True)
            return
        entry = self.stats[data["step"]]
        entry[0] += 1
        entry[1].append(time.time() - data["t"])


class Connection(asyncio.Protocol):
    def __init__(self, fleet: Fleet, host: str, path: str, origin: str) -> None:
        self.fleet = fleet
        self.host, self.path, self.origin = host, path, origin
        self.buffer = b""
        self.upgraded = False
        self.transport: asyncio.Transport | None = None
        self.closed = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        key = base64.b64encode(os.urandom(16)).decode()
        transport.write((f"GET {self.path} HTTP/1.1\r\nHost: {self.host}\r\nUpgrade: websocket\r\n"
                         f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
                         f"Origin: {self.origin}\r\n\r\n").encode())

    def send(self, text: str) -> None:
        assert self.transport is not None
        self.transport.write(encode_frame(text.encode()))

    def data_received(self, data: bytes) -> None:
        buffer = self.buffer + data if self.buffer else data
        if not self.upgraded:
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                self.buffer = buffer
                return
            if b" 101 " not in buffer[:buffer.find(b"\r\n")]:
                raise RuntimeError(f"handshake refused: {buffer[:200]!r}")
            self.upgraded = True
            buffer = buffer[end + 4:]
            self.send(INIT)
        pos, size = 0, len(buffer)
        while size - pos >= 2:
            opcode, length = buffer[pos] & 0x0F, buffer[pos + 1] & 0x7F
            start = pos + 2
            if length == 126:
                if size - start < 2:
                    break
                length, start = int.from_bytes(buffer[start:start + 2], "big"), start + 2
            elif length == 127:
                if size - start < 8:
                    break
                length, start = int.from_bytes(buffer[start:start + 8], "big"), start + 8
            if size - start < length:
                break
            payload = buffer[start:start + length]
            pos = start + length
            if opcode == 1:
                self.on_text(payload)
            elif opcode == 9:  # the server's own ping (uvicorn's --ws-ping-interval): pong, same bytes
                assert self.transport is not None
                self.transport.write(encode_frame(payload, 10))
            elif opcode == 8:
                assert self.transport is not None
                self.transport.close()
        self.buffer = buffer[pos:]

    def on_text(self, payload: bytes) -> None:
        if payload.startswith(NEXT) and (at := payload.find(b'"t":', len(NEXT))) > 0:
            # An event: only its time is read (a full json.loads was most of a client's CPU).
            end = payload.find(b",", at)
            step_at = payload.find(b'"step":', len(NEXT))
            step = int(payload[step_at + 7:payload.find(b",", step_at)])
            entry = self.fleet.stats[step]
            entry[0] += 1
            entry[1].append(time.time() - float(payload[at + 4:end]))
            return
        message = json.loads(payload)
        kind = message["type"]
        if kind == "next":
            self.fleet.on_next(message["payload"]["data"])
        elif kind == "ping":
            self.send(json.dumps({"type": "pong", "payload": message.get("payload")}))
        elif kind == "connection_ack":
            self.send(SUBSCRIBE)
        elif kind == "subscribed":
            self.fleet.subscribed += 1
            if self.fleet.subscribed == self.fleet.n:
                self.fleet.ready.set()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(None)


async def main() -> None:
    url, origin, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    per_second = float(sys.argv[4]) if len(sys.argv) > 4 else 500.0
    parts = urlsplit(url)
    assert parts.hostname is not None and parts.port is not None
    loop = asyncio.get_running_loop()
    fleet = Fleet(n)
    for i in range(n):
        await loop.create_connection(lambda: Connection(fleet, parts.netloc, parts.path, origin),
                                     parts.hostname, parts.port)
        if i % 25 == 24:  # a gentle ramp: the handshake must finish within the server's connect timeout
            await asyncio.sleep(25 / per_second)
    await asyncio.wait_for(fleet.ready.wait(), 300)
    print("READY", flush=True)
    await asyncio.Event().wait()  # the parent kills us when it is done


if __name__ == "__main__":
    asyncio.run(main())
