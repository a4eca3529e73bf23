"""``/subscribe`` under each supported ASGI server: daphne, uvicorn (websockets and wsproto) and granian.

One smoke test per server, end to end against a real process: the
handshake and the Origin check, a filtered subscription receiving events
published by another process, in order; flow control (a client that stops
reading is closed with 4008 while another is served in full); and the
protocol's close codes reaching the client as sent.
"""

from __future__ import annotations

import asyncio
import json
import re
from typing import Any

import pytest
import websockets

from tests.realtime.test_ws_e2e import AsgiServer, collect, drain_until_closed, handshake, publish_in_other_process
from tests.support.asgi_servers import SERVERS
from tests.support.redis_server import RedisServer

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]


async def closed_with(ws: Any) -> int | None:
    """Read until the server closes; the close code it sent (None when no close frame arrived)."""
    return (await drain_until_closed(ws, timeout=10))[1]


async def check_subscribe_and_events(server: AsgiServer, redis_port: int) -> None:
    async with server.connect() as ws:
        await handshake(ws, [("odd", "CameraEvents", {"camera_id__in": [1, 3]})])
        events = [{"n": n, "camera_id": n % 4} for n in range(40)]
        await asyncio.to_thread(publish_in_other_process, redis_port, "camera.events", events)
        got = await collect(ws, 20)
        assert [m["payload"]["data"]["n"] for m in got] == [e["n"] for e in events if e["camera_id"] in (1, 3)]
        assert {m["id"] for m in got} == {"odd"}
        await ws.send(json.dumps({"id": "odd", "type": "complete"}))
        await ws.send(json.dumps({"type": "ping", "payload": {"n": 1}}))
        reply = json.loads(await ws.recv())
        while reply["type"] == "ping":  # the server's own (SGM_WS_PING_INTERVAL is short here)
            reply = json.loads(await ws.recv())
        assert reply == {"type": "pong", "payload": {"n": 1}}


async def check_origin(server: AsgiServer) -> None:
    with pytest.raises(websockets.InvalidStatus) as info:
        async with websockets.connect(server.url, origin="http://evil.example"):
            pass
    assert info.value.response.status_code == 403


async def check_close_codes(server: AsgiServer) -> None:
    async with server.connect() as ws:
        await ws.send("{not json")
        assert await closed_with(ws) == 4400
    async with server.connect() as ws:
        await handshake(ws, [("a", "CameraEvents", {})])
        await ws.send(json.dumps({"id": "a", "type": "subscribe", "payload": {"entity": "CameraEvents"}}))
        assert await closed_with(ws) == 4409
    async with server.connect() as ws:
        await ws.send(json.dumps({"id": "a", "type": "subscribe", "payload": {"entity": "CameraEvents"}}))
        assert await closed_with(ws) == 4401  # subscribe before connection_init
    async with server.connect() as ws:  # the client's own close is a normal end, not an error
        await handshake(ws, [("a", "CameraEvents", {})])
    async with server.connect() as ws:
        await handshake(ws, [("a", "CameraEvents", {})])


async def check_flow_control(server: AsgiServer, redis_port: int) -> None:
    """A client that reads nothing and answers no ping is closed with 4008; the other gets every event."""
    async with server.connect(max_queue=2) as slow, server.connect() as fast:
        await handshake(slow, [("s", "CameraEvents", {})])
        await handshake(fast, [("f", "CameraEvents", {})])
        events = [{"n": n, "camera_id": 1, "pad": "x" * 4000} for n in range(1000)]
        publisher = asyncio.create_task(asyncio.to_thread(
            publish_in_other_process, redis_port, "camera.events", events, 0.001))
        received = 0
        async with asyncio.timeout(60):
            while received < len(events):
                message = json.loads(await fast.recv())
                if message["type"] == "ping":
                    await fast.send(json.dumps({"type": "pong", "payload": message.get("payload")}))
                elif message["type"] == "next":
                    received += 1
        await publisher
        await fast.close()  # served in full; it stops answering pings now, so it leaves first
        await asyncio.sleep(1.5)  # past the pong timeout: the slow client's pings are unanswered
        drained, code = await drain_until_closed(slow)
        assert drained < len(events)
        assert code in (4008, None)  # the close frame can be lost with the unread buffers
    assert received == len(events)


@pytest.mark.parametrize("kind", SERVERS)
async def test_subscribe_smoke(kind: str, redis_server: RedisServer) -> None:
    server = AsgiServer(redis_server.port, kind=kind, SGM_WS_PING_INTERVAL="0.3", SGM_WS_PONG_TIMEOUT="0.8")
    try:
        await check_origin(server)
        await check_subscribe_and_events(server, redis_server.port)
        await check_close_codes(server)
        await check_flow_control(server, redis_server.port)
    finally:
        server.stop()
    assert server.proc.stderr is not None
    log = server.proc.stderr.read()
    assert "Traceback" not in log, log[-3000:]
    closed = set(re.findall(r"connection (\w+) with code 4008", log))
    assert len(closed) == 1, log[-3000:]  # the slow client, never the fast one
