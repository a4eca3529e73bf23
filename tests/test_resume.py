"""WebSocket resume from durable streams: a client that was away gets exactly what it missed."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from channels.testing import WebsocketCommunicator
from django.test import override_settings

from supergraph_messaging import aredis_publish, streams
from supergraph_messaging.hub import get_hub
from tests.asgi import application

pytestmark = pytest.mark.django_db(transaction=True)
DURABLE = {"DELIVERY": "durable", "SERVICE_NAME": "tests"}


@pytest.fixture
async def hub(redis_conn: Any) -> AsyncIterator[None]:
    with override_settings(SUPERGRAPH_MESSAGING=DURABLE):
        yield
        await get_hub().close()


async def connect() -> WebsocketCommunicator:
    comm = WebsocketCommunicator(application, "/subscribe", headers=[(b"origin", b"http://testserver")])
    assert (await comm.connect())[0]
    await comm.send_json_to({"type": "connection_init", "payload": {}})
    assert (await comm.receive_json_from())["type"] == "connection_ack"
    return comm


async def subscribe(comm: WebsocketCommunicator, **payload: Any) -> dict[str, Any]:
    await comm.send_json_to({"id": "1", "type": "subscribe", "payload": {"entity": "CameraEvents", **payload}})
    return await comm.receive_json_from(timeout=3)  # type: ignore[no-any-return]


async def receive(comm: WebsocketCommunicator, count: int) -> list[dict[str, Any]]:
    return [await comm.receive_json_from(timeout=3) for _ in range(count)]


async def test_a_client_away_gets_exactly_the_missed_matching_events_then_live(hub: None) -> None:
    comm = await connect()
    assert (await subscribe(comm, filters={"camera_id__in": [1, 2]}))["type"] == "subscribed"
    for n in range(4):
        await aredis_publish("camera.events", {"camera_id": 1 + n % 3, "n": n})
    seen = await receive(comm, 3)  # camera 1, 2, 1 (3 is filtered out)
    last = seen[-1]["payload"]
    assert [m["payload"]["data"]["n"] for m in seen] == [0, 1, 3] and last["offset"] == 4
    await comm.disconnect()
    for n in range(4, 84):  # 80 events while the client is away for 3 s
        await aredis_publish("camera.events", {"camera_id": 1 + n % 3, "n": n})
    comm = await connect()
    reply = await subscribe(comm, filters={"camera_id__in": [1, 2]},
                            since={"camera.events": {"offset": last["offset"], "epoch": last["epoch"]}})
    assert reply == {"id": "1", "type": "subscribed", "payload": {"entity": "CameraEvents", "recovered": True}}
    expected = [n for n in range(4, 84) if 1 + n % 3 in (1, 2)]
    got = await receive(comm, len(expected))
    assert [m["payload"]["data"]["n"] for m in got] == expected  # no holes, no duplicates, in order
    assert [m["payload"]["offset"] for m in got] == [n + 1 for n in expected]
    await aredis_publish("camera.events", {"camera_id": 2, "n": 84})
    live = await comm.receive_json_from(timeout=3)
    assert live["payload"]["data"]["n"] == 84 and live["payload"]["offset"] == 85
    assert await comm.receive_nothing(timeout=0.2)
    print(f"\nback after 80 events: {len(got)} missed matching events replayed, 0 lost, 0 duplicated")
    await comm.disconnect()


async def test_a_trimmed_or_reset_history_is_unrecoverable(hub: None, redis_conn: Any) -> None:
    for n in range(20):
        await aredis_publish("camera.events", {"camera_id": 1, "n": n})
    epoch = redis_conn.hget(streams.keys("camera.events")[1], "e").decode()
    redis_conn.xtrim(streams.keys("camera.events")[0], maxlen=5, approximate=False)
    for since in ({"offset": 2, "epoch": epoch}, {"offset": 19, "epoch": "another-epoch"}):
        comm = await connect()
        reply = await subscribe(comm, since={"camera.events": since})
        assert reply["payload"]["recovered"] is False
        assert await comm.receive_json_from(timeout=3) == {
            "id": "1", "type": "gap", "payload": {"reason": "unrecoverable"}}
        await aredis_publish("camera.events", {"camera_id": 1, "n": 99})
        assert (await comm.receive_json_from(timeout=3))["payload"]["data"]["n"] == 99  # live goes on
        await comm.disconnect()
    with override_settings(SUPERGRAPH_MESSAGING={**DURABLE, "WS_RECOVERY_MAX": 3}):
        comm = await connect()
        reply = await subscribe(comm, since={"camera.events": {"offset": 15, "epoch": epoch}})
        assert reply["payload"]["recovered"] is False  # more missed than WS_RECOVERY_MAX
        await comm.disconnect()


async def test_the_hubs_reconnect_is_filled_from_the_stream(hub: None, redis_server: Any) -> None:
    comm = await connect()
    assert (await subscribe(comm))["type"] == "subscribed"
    await aredis_publish("camera.events", {"camera_id": 1, "n": 0})
    assert (await comm.receive_json_from(timeout=3))["payload"]["data"]["n"] == 0
    assert redis_server.client_kill("pubsub") >= 1
    for n in range(1, 21):  # some are published before the hub has resubscribed
        await aredis_publish("camera.events", {"camera_id": 1, "n": n})
    got = await receive(comm, 20)
    assert [m["type"] for m in got] == ["next"] * 20, got
    print(f"\nhub reconnect while 20 events were published: {20 - len(got)} missed, no gap")
    assert [m["payload"]["data"]["n"] for m in got] == list(range(1, 21))
    assert await comm.receive_nothing(timeout=0.3)
    await comm.disconnect()


async def test_since_is_validated(hub: None) -> None:
    comm = await connect()
    reply = await subscribe(comm, since={"camera.events": {"offset": "x"}})
    assert reply["type"] == "error" and reply["payload"][0]["code"] == "invalid_since"
    await comm.disconnect()
