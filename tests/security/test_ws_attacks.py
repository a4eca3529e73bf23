"""Attacks 1-5 and 7 on /subscribe: memory, liveness, rate, access.

The daphne test runs attacks 1-3 against a real server and measures its RSS
and a witness client's latency throughout; the communicator tests pin down
each defence on its own.
"""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import websockets
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from django.test import override_settings

from supergraph_messaging import aredis_publish
from supergraph_messaging.realtime.hub import get_hub
from tests.realtime.test_ws_e2e import Daphne, publish_in_other_process
from tests.support.asgi import application
from tests.support.redis_server import RedisServer

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]
ORIGIN = (b"origin", b"http://testserver")


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


async def subscribe_witness(ws: Any) -> None:
    """A well-behaved client: subscribed to camera 0's events, whose latency the attack tests measure."""
    await ws.send(json.dumps({"type": "connection_init", "payload": {}}))
    await ws.recv()
    await ws.send(json.dumps({"id": "w", "type": "subscribe",
                              "payload": {"entity": "CameraEvents", "filters": {"camera_id": 0}}}))
    assert json.loads(await ws.recv())["type"] == "subscribed"


async def non_reading_client(server: Daphne, subscriptions: int, fields: list[str] | None = None) -> Any:
    """A client with a 4 KB receive buffer that stops reading after its subscriptions are answered."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", server.port))
    ws = await websockets.connect(server.url, sock=sock, origin=f"http://127.0.0.1:{server.port}",
                                  max_queue=1, ping_interval=None)
    await ws.send(json.dumps({"type": "connection_init", "payload": {}}))
    await ws.recv()
    for i in range(subscriptions):
        payload: dict[str, Any] = {"entity": "CameraEvents", "filters": {"camera_id__ne": -1 - i}}
        if fields is not None:
            payload["fields"] = fields
        await ws.send(json.dumps({"id": str(i), "type": "subscribe", "payload": payload}))
        await ws.recv()
    return ws


async def unsolicited_pongs(ws: Any) -> None:
    while True:
        await ws.send(json.dumps({"type": "pong"}))
        await asyncio.sleep(0.5)


async def test_memory_stays_bounded_and_the_witness_is_served(redis_server: RedisServer) -> None:
    server = Daphne(redis_server.port, SGM_WS_PING_INTERVAL="1", SGM_WS_PONG_TIMEOUT="3")
    attackers: list[Any] = []
    try:
        async with server.connect() as witness:
            await subscribe_witness(witness)
            baseline = rss_mb(server.proc.pid)
            latencies: list[float] = []
            peak = baseline

            async def witness_reads() -> None:
                while True:
                    message = json.loads(await witness.recv())
                    if message["type"] == "ping":
                        await witness.send(json.dumps({"type": "pong", "payload": message["payload"]}))
                    elif message["type"] == "next" and message["payload"]["data"].get("camera_id") == 0:
                        latencies.append(time.time() - message["payload"]["data"]["t"])

            reader = asyncio.create_task(witness_reads())
            # Attack 1: two clients that never read, 50 subscriptions each, pongs sent unasked.
            for _ in range(2):
                attackers.append(await non_reading_client(server, 50))
            pongers = [asyncio.create_task(unsolicited_pongs(ws)) for ws in attackers]
            # Attack 2: 10 sockets x 50 subscriptions asking for 8,000 field names each.
            fields_refused = 0
            for _ in range(10):
                async with server.connect() as ws:
                    await ws.send(json.dumps({"type": "connection_init", "payload": {}}))
                    await ws.recv()
                    for i in range(50):
                        await ws.send(json.dumps({"id": str(i), "type": "subscribe", "payload": {
                            "entity": "CameraEvents", "fields": [f"{n:x}" for n in range(8000)]}}))
                        reply = json.loads(await ws.recv())
                        fields_refused += reply["type"] == "error"
            # Events: 4 KB each to every subscription, witness events among them.
            events = [{"camera_id": n % 5, "pad": "x" * 4000} for n in range(300)]
            publisher = asyncio.create_task(asyncio.to_thread(
                publish_in_other_process, redis_server.port, "camera.events", events, 0.01))
            while not publisher.done():
                peak = max(peak, rss_mb(server.proc.pid))
                await asyncio.sleep(0.1)
            await publisher
            # Attack 3: one 1 MB event to the attackers' 100 subscriptions and the witness.
            await asyncio.to_thread(publish_in_other_process, redis_server.port, "camera.events",
                                    [{"camera_id": 0, "pad": "y" * 1_000_000}], 0)
            for _ in range(20):
                peak = max(peak, rss_mb(server.proc.pid))
                await asyncio.sleep(0.1)
            for task in (*pongers, reader):
                task.cancel()
        growth = peak - baseline
        latencies.sort()
        p99 = latencies[int(len(latencies) * 0.99) - 1] * 1000 if latencies else float("inf")
        server.stop()
        log = server.proc.stderr.read() if server.proc.stderr else ""
        closed_4008 = log.count("code 4008")
        print(f"\ndaphne RSS {baseline:.0f} MB -> peak {peak:.0f} MB (+{growth:.0f} MB); witness {len(latencies)} "
              f"events, p99 {p99:.1f} ms; fields refused {fields_refused}/500; closed 4008: {closed_4008}")
        assert growth <= 50
        assert p99 <= 100 and len(latencies) >= 50
        assert fields_refused == 500
        assert closed_4008 >= 2
    finally:
        for ws in attackers:
            ws.transport.abort()
        server.stop()


# -- each defence on its own ---------------------------------------------------
@pytest.fixture
async def hub(redis_conn: Any) -> AsyncIterator[None]:
    yield
    await get_hub().close()


async def connect(**init: Any) -> WebsocketCommunicator:
    comm = WebsocketCommunicator(application, "/subscribe", headers=[ORIGIN])
    assert (await comm.connect())[0]
    await comm.send_json_to({"type": "connection_init", "payload": init})
    assert (await comm.receive_json_from())["type"] == "connection_ack"
    return comm


async def subscribe(comm: WebsocketCommunicator, sub_id: str, **payload: Any) -> dict[str, Any]:
    await comm.send_json_to({"id": sub_id, "type": "subscribe", "payload": {"entity": "CameraEvents", **payload}})
    return await comm.receive_json_from(timeout=3)  # type: ignore[no-any-return]


async def closed_with(comm: WebsocketCommunicator, timeout: float = 5) -> int:
    while True:
        message = await comm.receive_output(timeout=timeout)
        if message["type"] == "websocket.close":
            return int(message["code"])


async def test_only_a_pong_echoing_an_outstanding_ping_acknowledges(hub: None) -> None:
    settings = {"WS_MAX_BUFFERED_BYTES": 20_000, "WS_PING_INTERVAL": 30}
    with override_settings(SUPERGRAPH_MESSAGING=settings):
        comm = await connect()
        assert (await subscribe(comm, "1"))["type"] == "subscribed"
        for n in range(30):  # 30 x 1 KB, no reading: the budget runs out
            await aredis_publish("camera.events", {"camera_id": n, "pad": "x" * 1000})
            await comm.send_json_to({"type": "pong"})  # unsolicited: acknowledges nothing
        assert await closed_with(comm) == 4008
        comm = await connect()
        assert (await subscribe(comm, "1"))["type"] == "subscribed"
        for n in range(60):  # a client that reads and answers every ping stays
            await aredis_publish("camera.events", {"camera_id": n, "pad": "x" * 1000})
            message = await comm.receive_json_from(timeout=3)
            while message["type"] == "ping":
                await comm.send_json_to({"type": "pong", "payload": message["payload"]})
                message = await comm.receive_json_from(timeout=3)
            assert message["type"] == "next"
        await comm.disconnect()


async def test_fields_are_bounded_declared_and_duplicates_refused(hub: None, monkeypatch: Any) -> None:
    comm = await connect()
    reply = await subscribe(comm, "big", fields=[f"{n:x}" for n in range(8000)])
    assert reply["type"] == "error" and reply["payload"][0]["code"] == "invalid_fields"
    assert "limit is 100" in reply["payload"][0]["message"]
    assert (await subscribe(comm, "a", fields=["camera_id"]))["type"] == "subscribed"
    twin = await subscribe(comm, "b", fields=["camera_id", "camera_id"])
    assert twin["type"] == "error" and twin["payload"][0]["code"] == "duplicate_subscription"
    from tests.testapp.subscriptions import CameraEventsSubscription

    monkeypatch.setattr(CameraEventsSubscription, "fields", ["camera_id", "event_type"])
    reply = await subscribe(comm, "c", fields=["secret"])
    assert reply["type"] == "error" and "no field 'secret'" in reply["payload"][0]["message"]
    await comm.disconnect()


async def test_a_huge_event_becomes_a_gap(hub: None) -> None:
    comm = await connect()
    assert (await subscribe(comm, "1"))["type"] == "subscribed"
    await aredis_publish("camera.events", {"camera_id": 1, "pad": "x" * 1_000_000})
    await aredis_publish("camera.events", {"camera_id": 2})
    first, second = await comm.receive_json_from(timeout=3), await comm.receive_json_from(timeout=3)
    assert first == {"id": "1", "type": "gap", "payload": {"reason": "event_too_large"}}
    assert second["type"] == "next" and second["payload"]["data"] == {"camera_id": 2}
    await comm.disconnect()


async def test_deeply_nested_json_closes_4400_and_releases_routes(hub: None, redis_conn: Any) -> None:
    for _ in range(20):
        comm = await connect()
        assert (await subscribe(comm, "1"))["type"] == "subscribed"
        await comm.send_to(text_data="[" * 5000 + "]" * 5000)
        assert await closed_with(comm) == 4400
        await comm.disconnect()  # as daphne does after the close handshake
    await asyncio.sleep(0.2)
    numsub = redis_conn.pubsub_numsub("camera.events")[0][1]
    print(f"\nPUBSUB NUMSUB after 20 crashing frames: {numsub}")
    assert numsub == 0 and get_hub().channels == {}


async def test_rate_is_counted_on_arrival_not_processing(hub: None, monkeypatch: Any) -> None:
    """80 frames/s while one slow subscribe holds processing back for 1.2 s: never 4429."""
    from tests.testapp.subscriptions import CameraEventsSubscription

    def slow_permission(cls: Any, user: Any) -> bool:
        time.sleep(1.2)
        return True

    monkeypatch.setattr(CameraEventsSubscription, "has_permission", classmethod(slow_permission))
    comm = await connect()
    await comm.send_json_to({"id": "slow", "type": "subscribe", "payload": {"entity": "CameraEvents"}})
    for _ in range(120):  # 1.5 s at 80 frames/s, queued behind the slow subscribe
        await comm.send_json_to({"type": "ping"})
        await asyncio.sleep(1 / 80)
    types = [(await comm.receive_json_from(timeout=5))["type"] for _ in range(121)]
    assert types.count("pong") == 120 and "subscribed" in types
    await comm.disconnect()


async def subscribed_to_secret(session_id: str) -> WebsocketCommunicator:
    """A connection with this session, subscribed as ``s`` to Secret (which needs a logged-in user)."""
    headers = [ORIGIN, (b"cookie", f"sessionid={session_id}".encode())]
    comm = WebsocketCommunicator(application, "/subscribe", headers=headers)
    assert (await comm.connect())[0]
    await comm.send_json_to({"type": "connection_init", "payload": {}})
    assert (await comm.receive_json_from())["type"] == "connection_ack"
    await comm.send_json_to({"id": "s", "type": "subscribe", "payload": {"entity": "Secret"}})
    assert (await comm.receive_json_from())["type"] == "subscribed"
    return comm


@pytest.mark.parametrize("how", ["logout", "deactivate"])
async def test_access_ends_at_logout_or_deactivation(hub: None, how: str) -> None:
    from django.contrib.auth.models import User
    from django.test import Client

    def login() -> tuple[str, User]:
        user = User.objects.create_user(f"u-{how}", password="pw")
        client = Client()
        assert client.login(username=f"u-{how}", password="pw")
        return client.cookies["sessionid"].value, user

    session_id, user = await sync_to_async(login)()
    with override_settings(SUPERGRAPH_MESSAGING={"WS_AUTH_RECHECK_INTERVAL": 0.2}):
        comm = await subscribed_to_secret(session_id)
        if how == "logout":
            from django.contrib.sessions.models import Session

            await sync_to_async(Session.objects.filter(session_key=session_id).delete)()
        else:
            user.is_active = False
            await sync_to_async(user.save)()
        ended = await comm.receive_json_from(timeout=3)
        assert ended["id"] == "s" and ended["type"] == "error" and ended["payload"][0]["code"] == "forbidden"
        assert (await comm.receive_json_from(timeout=3)) == {"id": "s", "type": "complete"}
        await aredis_publish("secret.events", {"n": 1})
        assert await comm.receive_nothing(timeout=0.5)
        await comm.send_json_to({"id": "again", "type": "subscribe", "payload": {"entity": "Secret"}})
        again = await comm.receive_json_from(timeout=3)
        assert again["type"] == "error" and again["payload"][0]["code"] == "forbidden"
        await comm.disconnect()


async def test_logout_ends_the_sessions_subscriptions_within_a_second(hub: None) -> None:
    """Issue 26, item 8: an open subscription received the next event after the user logged out (re-check every
    60 s). A logout in any process is announced to every hub; this one re-checks at once."""
    from django.test import Client

    def login() -> tuple[Client, str]:
        from django.contrib.auth.models import User

        User.objects.create_user("u-logout-now", password="pw")
        client = Client()
        assert client.login(username="u-logout-now", password="pw")
        return client, client.cookies["sessionid"].value

    client, session_id = await sync_to_async(login)()
    comm = await subscribed_to_secret(session_id)
    started = time.monotonic()
    await sync_to_async(client.logout)()  # user_logged_out, in this process as it would be in another
    ended = await comm.receive_json_from(timeout=1)
    took = time.monotonic() - started
    print(f"\nlogout -> the session's subscription ended after {took * 1000:.0f} ms (WS_AUTH_RECHECK_INTERVAL 60 s)")
    assert ended["id"] == "s" and ended["type"] == "error" and ended["payload"][0]["code"] == "forbidden"
    assert (await comm.receive_json_from(timeout=1)) == {"id": "s", "type": "complete"}
    assert took < 1.0
    await aredis_publish("secret.events", {"n": 1})
    assert await comm.receive_nothing(timeout=0.3)
    await comm.disconnect()
