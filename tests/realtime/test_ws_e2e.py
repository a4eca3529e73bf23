"""End to end: an ASGI server (daphne unless said) as a subprocess, real `websockets` clients,
publishers in other processes."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest
import websockets

from tests.conftest import subprocess_env
from tests.support.asgi_servers import start_server, stop_server
from tests.support.redis_server import RedisServer, free_port

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]


class AsgiServer:
    """``tests.support.asgi:application`` under ASGI server ``kind`` (:mod:`tests.support.asgi_servers`)."""

    def __init__(self, redis_port: int, port: int | None = None, kind: str = "daphne", **env: str) -> None:
        self.port = port or free_port()
        self.kind = kind
        self.proc = start_server(kind, self.port, subprocess_env(SGM_TEST_REDIS_PORT=str(redis_port), **env))

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/subscribe"

    def connect(self, **kwargs: Any) -> Any:
        return websockets.connect(self.url, origin=f"http://127.0.0.1:{self.port}", **kwargs)

    def stop(self) -> None:
        stop_server(self.proc)


#: Most tests here run under daphne; tests/realtime/test_asgi_servers.py runs the smoke test under each server.
Daphne = AsgiServer


@pytest.fixture
def daphne(redis_server: RedisServer, topology: str) -> Iterator[Daphne]:
    """daphne on the Redis under test (Sentinel and Cluster: the URL reaches it through subprocess_env)."""
    server = Daphne(redis_server.port)
    yield server
    server.stop()


def publishing_port(topology: str, redis_server: RedisServer) -> int:
    """A node a plain client may PUBLISH to: the server, the primary, or one node of the cluster."""
    if topology == "single":
        return redis_server.port
    from tests.conftest import topology_setup

    with topology_setup(topology).client() as conn:
        if topology == "cluster":
            return int(conn.get_default_node().port)
        return int(conn.connection_pool.connection_kwargs["port"])


def publish_in_other_process(port: int, channel: str, events: list[dict[str, Any]], pace: float = 0.0) -> None:
    code = (
        "import json, sys, time, redis\n"
        f"r = redis.Redis(port={port})\n"
        "for e in json.loads(sys.stdin.read()):\n"
        "    e['t'] = time.time()\n"
        f"    r.publish({channel!r}, json.dumps(e))\n"
        f"    time.sleep({pace})\n"
    )
    subprocess.run([sys.executable, "-c", code], input=json.dumps(events), text=True, check=True, timeout=120)


async def handshake(ws: Any, subs: list[tuple[str, str, dict[str, Any]]]) -> None:
    await ws.send(json.dumps({"type": "connection_init", "payload": {}}))
    assert json.loads(await ws.recv())["type"] == "connection_ack"
    for sub_id, entity, filters in subs:
        await ws.send(json.dumps({"id": sub_id, "type": "subscribe",
                                  "payload": {"entity": entity, "filters": filters}}))
        assert json.loads(await ws.recv())["type"] == "subscribed"


async def collect(ws: Any, count: int, timeout: float = 10) -> list[dict[str, Any]]:
    out = []
    async with asyncio.timeout(timeout):
        while len(out) < count:
            message = json.loads(await ws.recv())
            if message["type"] == "next":
                out.append(message)
    return out


async def drain_until_closed(ws: Any, timeout: float = 30) -> tuple[int, int | None]:
    """Read until the server closes: the frames read, and the close code it sent (None: no close frame)."""
    drained = 0
    with pytest.raises(websockets.ConnectionClosed) as info:
        async with asyncio.timeout(timeout):
            while True:
                await ws.recv()
                drained += 1
    return drained, info.value.rcvd.code if info.value.rcvd is not None else None


async def test_filtered_subscriptions_end_to_end(daphne: Daphne, redis_server: RedisServer, topology: str) -> None:
    async with daphne.connect() as a, daphne.connect() as b:
        await handshake(a, [("x", "CameraEvents", {"camera_id__in": [1, 2]}),
                            ("y", "CameraEvents", {"complex_id": 9})])
        await handshake(b, [("lite", "CameraEventsLite", {"event_type": "tamper"})])
        events = [{"n": n, "camera_id": n % 4, "complex_id": 9 if n % 5 == 0 else 1,
                   "event_type": "tamper" if n % 3 == 0 else "motion"} for n in range(200)]
        port = publishing_port(topology, redis_server)
        await asyncio.to_thread(publish_in_other_process, port, "camera.events", events)
        want_x = [e["n"] for e in events if e["camera_id"] in (1, 2)]
        want_y = [e["n"] for e in events if e["complex_id"] == 9]
        want_lite = [e["n"] for e in events if e["event_type"] == "tamper"]
        got_a = await collect(a, len(want_x) + len(want_y))
        got_b = await collect(b, len(want_lite))
        assert [m["payload"]["data"]["n"] for m in got_a if m["id"] == "x"] == want_x  # in order
        assert [m["payload"]["data"]["n"] for m in got_a if m["id"] == "y"] == want_y
        assert [m["payload"]["data"]["n"] for m in got_b] == want_lite
        assert {m["payload"]["entity"] for m in got_b} == {"CameraEventsLite"}
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.3):
                await a.recv()  # nothing else arrived


async def test_redis_killed_and_restarted_sends_gap(own_redis: RedisServer) -> None:
    server = Daphne(own_redis.port)
    try:
        async with server.connect() as ws:
            await handshake(ws, [("1", "CameraEvents", {"camera_id": 1}), ("2", "CameraEventsLite", {})])
            await asyncio.to_thread(own_redis.kill)
            await asyncio.sleep(0.3)
            await asyncio.to_thread(own_redis.start)
            gaps = []
            async with asyncio.timeout(10):
                while len(gaps) < 2:
                    message = json.loads(await ws.recv())
                    assert message["type"] == "gap", message
                    gaps.append(message)
            assert sorted(g["id"] for g in gaps) == ["1", "2"]
            assert all(g["payload"] == {"reason": "reconnected"} for g in gaps)
            await asyncio.to_thread(publish_in_other_process, own_redis.port, "camera.events",
                                    [{"camera_id": 1, "n": 1}])
            got = await collect(ws, 2)
            assert sorted(m["id"] for m in got) == ["1", "2"]  # still active, no resubscribe
    finally:
        server.stop()


async def test_slow_client_closed_4008_others_served(redis_server: RedisServer) -> None:
    server = Daphne(redis_server.port, SGM_WS_PING_INTERVAL="0.5", SGM_WS_PONG_TIMEOUT="1")
    try:
        async with server.connect(max_queue=4) as slow, server.connect() as fast:
            await handshake(slow, [("s", "CameraEvents", {})])
            await handshake(fast, [("f", "CameraEvents", {})])
            events = [{"n": n, "camera_id": 1, "pad": "x" * 1000} for n in range(1000)]
            publisher = asyncio.create_task(asyncio.to_thread(
                publish_in_other_process, redis_server.port, "camera.events", events, 0.002))
            latencies = []
            async with asyncio.timeout(60):
                while len(latencies) < len(events):
                    message = json.loads(await fast.recv())
                    if message["type"] == "ping":
                        await fast.send(json.dumps({"type": "pong", "payload": message.get("payload")}))
                        continue
                    latencies.append(time.time() - message["payload"]["data"]["t"])
            await publisher
            latencies.sort()
            p50, p99 = latencies[len(latencies) // 2] * 1000, latencies[int(len(latencies) * 0.99)] * 1000
            print(f"\nother client while a slow one stalled: {len(latencies)} events, "
                  f"p50 {p50:.1f} ms, p99 {p99:.1f} ms")
            async def keep_answering() -> None:
                while True:
                    message = json.loads(await fast.recv())
                    if message["type"] == "ping":
                        await fast.send(json.dumps({"type": "pong", "payload": message.get("payload")}))

            answering = asyncio.create_task(keep_answering())
            await asyncio.sleep(2.5)  # the slow client keeps not reading past the pong timeout
            answering.cancel()
            # Now it drains what was buffered and finds the 4008 close.
            drained, code = await drain_until_closed(slow)
            assert drained < len(events)  # it was cut off, not served to the end
            assert code in (4008, None)  # the close frame may be lost with the unread buffers
    finally:
        server.stop()
    assert server.proc.stderr is not None
    log = server.proc.stderr.read()
    assert "with code 4008 (client too slow)" in log, log[-2000:]
    assert len(set(re.findall(r"connection (\w+) with code 4008", log))) == 1  # never the fast client


async def test_redis_restart_with_worker_daphne_and_an_idle_hub(own_redis: RedisServer) -> None:
    """Kill + restart Redis three times while messaging_listen and daphne (its hub idle) run.

    Counted after each restart: invalidations lost (the first one after the restart included),
    and how long the first subscribe takes to be answered.
    """
    from tests.conftest import manage

    env = {"SGM_TEST_REDIS_PORT": str(own_redis.port)}
    worker = manage("messaging_listen", **env)
    server = Daphne(own_redis.port)
    lost, answers = 0, []
    try:
        async with server.connect() as ws:  # the hub starts, then goes idle
            await handshake(ws, [("warm", "CameraEvents", {})])
            await ws.send(json.dumps({"id": "warm", "type": "complete"}))
        for round_ in range(3):
            await asyncio.to_thread(own_redis.restart)
            conn = own_redis.client()
            deadline = time.monotonic() + 10
            while conn.pubsub_numsub("camera.updated")[0][1] != 1:
                if time.monotonic() > deadline:  # say whose subscriptions are there (seen once in CI)
                    clients = [c for c in conn.client_list() if int(c.get("sub", 0)) or int(c.get("psub", 0))]
                    raise AssertionError(f"round {round_}: {conn.pubsub_numsub('camera.updated')[0][1]} "
                                         f"subscribers of camera.updated 10 s after the restart; {clients}")
                await asyncio.sleep(0.02)
            keys = [f"camera:mac:R{round_}-{i}" for i in range(5)]
            conn.mset({k: "stale" for k in keys})
            for i in range(5):
                conn.publish("camera.updated", json.dumps({"mac_address": f"R{round_}-{i}"}))
            deadline = time.monotonic() + 3
            while conn.exists(*keys) and time.monotonic() < deadline:
                await asyncio.sleep(0.01)
            lost += conn.exists(*keys)
            async with server.connect() as ws:
                await ws.send(json.dumps({"type": "connection_init", "payload": {}}))
                assert json.loads(await ws.recv())["type"] == "connection_ack"
                started = time.monotonic()
                await ws.send(json.dumps({"id": "1", "type": "subscribe", "payload": {"entity": "CameraEvents"}}))
                reply = json.loads(await asyncio.wait_for(ws.recv(), 5))
                answers.append((reply["type"], time.monotonic() - started))
            conn.close()
    finally:
        server.stop()
        worker.terminate()
        worker.wait(10)
    print(f"\n3 Redis restarts: {lost} of 15 invalidations lost; first subscribe after each: "
          + ", ".join(f"{kind} in {seconds * 1000:.0f} ms" for kind, seconds in answers))
    assert lost == 0
    assert all(kind == "subscribed" and seconds < 1.0 for kind, seconds in answers)
