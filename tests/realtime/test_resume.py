"""WebSocket resume from durable streams: a client that was away gets exactly what it missed."""

from __future__ import annotations

import json
import random
from collections.abc import AsyncIterator
from typing import Any

import pytest
from channels.testing import WebsocketCommunicator
from django.test import override_settings

from supergraph_messaging import aredis_publish
from supergraph_messaging.delivery import history, streams
from supergraph_messaging.realtime import filters
from supergraph_messaging.realtime.hub import get_hub
from supergraph_messaging.redis import serialization
from supergraph_messaging.redis.client import get_redis_client
from tests.support.asgi import application
from tests.testapp.subscriptions import CameraEventsSubscription as CameraEvents

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
    since = {"camera.events": {"offset": last["offset"], "epoch": last["epoch"]}}
    reply = await subscribe(comm, filters={"camera_id__in": [1, 2]}, since=since)
    assert reply == {"id": "1", "type": "subscribed",
                     "payload": {"entity": "CameraEvents", "recovered": True, "positions": since}}
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


async def test_resumes_from_one_position_share_reads_and_each_gets_exactly_what_it_missed(hub: None) -> None:
    """A reconnect storm in small: 30 clients resume from the same position while events keep coming.

    Each gets every event after its position exactly once, in order; a read is reused only by the
    resumes it covers (one made before an event a resume needs is not), so there are far fewer reads.
    """
    import asyncio

    comm = await connect()
    assert (await subscribe(comm))["type"] == "subscribed"
    await aredis_publish("camera.events", {"camera_id": 1, "n": 0})
    last = (await comm.receive_json_from(timeout=3))["payload"]
    await comm.disconnect()
    for n in range(1, 21):
        await aredis_publish("camera.events", {"camera_id": 1, "n": n})
    since = {"camera.events": {"offset": last["offset"], "epoch": last["epoch"]}}
    reads_before = get_hub().replays.reads

    async def resume() -> tuple[WebsocketCommunicator, dict[str, Any]]:
        client = await connect()
        return client, await subscribe(client, since=since)

    clients = []
    for wave in range(3):  # 10 resumes at once, then one more event, then the next 10
        clients += await asyncio.gather(*(resume() for _ in range(10)))
        await aredis_publish("camera.events", {"camera_id": 1, "n": 21 + wave})
    for client, reply in clients:
        assert reply["payload"]["recovered"] is True
        got = await receive(client, 23)
        assert [m["payload"]["data"]["n"] for m in got] == list(range(1, 24))  # none lost, none twice
        assert await client.receive_nothing(timeout=0.05)
        await client.disconnect()
    reads = get_hub().replays.reads - reads_before
    print(f"\n3 waves of 10 resumes from one position, an event between waves: {reads} reads of the stream")
    assert reads == 3  # one per wave: a read made before an event a resume needs is not reused


async def test_a_burst_of_subscribes_shares_position_reads_and_each_position_is_exact(hub: None) -> None:
    """40 clients subscribe at once while events keep coming: each ``subscribed`` position is where its
    live events start (the next event it gets is offset + 1, with no hole up to the last), and the
    position reads are shared. A read that a subscribe joined after it had begun would be too early
    for it: its client would see a hole between its position and its first live event."""
    import asyncio

    comm = await connect()
    assert (await subscribe(comm))["type"] == "subscribed"  # the hub is up: the burst only subscribes
    stop = asyncio.Event()

    async def publish() -> None:
        n = 0
        while not stop.is_set():
            await aredis_publish("camera.events", {"camera_id": 1, "n": n})
            n += 1
            await asyncio.sleep(0.002)

    async def burst_client() -> tuple[WebsocketCommunicator, dict[str, Any]]:
        client = await connect()
        return client, await subscribe(client)

    hub = get_hub()
    reads_before = hub.position_reads.reads
    publisher = asyncio.get_running_loop().create_task(publish())
    clients = await asyncio.gather(*(burst_client() for _ in range(40)))
    stop.set()
    await publisher
    reads = hub.position_reads.reads - reads_before
    await aredis_publish("camera.events", {"camera_id": 1, "last": True})
    for client, reply in clients:
        expected = reply["payload"]["positions"]["camera.events"]["offset"] + 1
        while True:
            message = await client.receive_json_from(timeout=3)
            assert message["payload"]["offset"] == expected, (message, expected)  # no hole, none twice
            expected += 1
            if message["payload"]["data"].get("last"):
                break
        await client.disconnect()
    await comm.disconnect()
    print(f"\n40 subscribes at once while events were published: {reads} position reads")
    assert reads < 40


async def test_a_position_read_serves_the_subscribes_that_asked_before_it_began_and_no_later_one(hub: None) -> None:
    """Subscribes that ask while no read has begun share one; one that asks after a read began (its
    route went live after the read may have run) waits for the next read."""
    import asyncio

    from supergraph_messaging.realtime.replays import SharedPositions

    shared = SharedPositions(asyncio.Semaphore(16))
    conn = get_redis_client().aredis
    together = [asyncio.get_running_loop().create_task(shared.read(conn, ["camera.events"])) for _ in range(10)]
    await asyncio.sleep(0)
    await asyncio.sleep(0)  # the read has begun: it waits for Redis's answer
    assert shared.reads == 1
    later = asyncio.get_running_loop().create_task(shared.read(conn, ["camera.events"]))
    results = await asyncio.gather(*together, later)
    assert shared.reads == 2
    assert len({tuple(r["camera.events"]) for r in results}) == 1  # no event in between: the same position


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


async def test_subscribed_gives_a_position_for_every_channel_even_one_without_events(hub: None,
                                                                                  redis_conn: Any) -> None:
    await aredis_publish("camera.updated", {"id": 1})
    comm = await connect()
    reply = await subscribe(comm, entity="CameraLifecycle")
    positions = reply["payload"]["positions"]
    assert set(positions) == {"camera.created", "camera.updated"}
    assert positions["camera.updated"]["offset"] == 1 and positions["camera.created"]["offset"] == 0
    assert positions["camera.created"]["epoch"] == redis_conn.hget(streams.keys("camera.created")[1], "e").decode()
    await comm.disconnect()


async def test_resume_of_a_channel_the_client_never_saw_an_event_on(hub: None) -> None:
    """The trial: a client saw only camera.updated, was away while 10 cameras were created and 10 updated,
    and resumed: 0/10 creates and recovered: true. With the subscribed reply's positions it gets 10/10."""
    comm = await connect()
    reply = await subscribe(comm, entity="CameraLifecycle")
    positions = reply["payload"]["positions"]  # what client.js keeps, and updates with every next frame
    await aredis_publish("camera.updated", {"id": 0})
    seen = (await comm.receive_json_from(timeout=3))["payload"]
    positions[seen["channel"]] = {"offset": seen["offset"], "epoch": seen["epoch"]}
    await comm.disconnect()
    for n in range(1, 11):
        await aredis_publish("camera.created", {"id": n})
        await aredis_publish("camera.updated", {"id": n})
    comm = await connect()
    reply = await subscribe(comm, entity="CameraLifecycle", since=positions)
    assert reply["payload"]["recovered"] is True
    got = await receive(comm, 20)
    created = [m["payload"]["data"]["id"] for m in got if m["payload"]["channel"] == "camera.created"]
    updated = [m["payload"]["data"]["id"] for m in got if m["payload"]["channel"] == "camera.updated"]
    print(f"\nresume of a channel never seen: {len(created)}/10 creates, {len(updated)}/10 updates")
    assert created == list(range(1, 11)) and updated == list(range(1, 11))
    assert await comm.receive_nothing(timeout=0.2)
    await comm.disconnect()


async def test_a_since_without_every_channel_is_not_recovered(hub: None) -> None:
    """An old client's since names only the channels it saw: the others cannot be filled, so it is told."""
    comm = await connect()
    await subscribe(comm, entity="CameraLifecycle")
    await aredis_publish("camera.updated", {"id": 0})
    seen = (await comm.receive_json_from(timeout=3))["payload"]
    await comm.disconnect()
    await aredis_publish("camera.created", {"id": 1})
    comm = await connect()
    reply = await subscribe(comm, entity="CameraLifecycle",
                            since={"camera.updated": {"offset": seen["offset"], "epoch": seen["epoch"]}})
    assert reply["payload"]["recovered"] is False
    assert set(reply["payload"]["positions"]) == {"camera.created", "camera.updated"}
    assert await comm.receive_json_from(timeout=3) == {"id": "1", "type": "gap",
                                                       "payload": {"reason": "unrecoverable"}}
    await comm.disconnect()


async def test_the_hubs_reconnect_sends_no_gap_for_a_channel_without_events(hub: None, redis_server: Any) -> None:
    """Issue 25, finding 6: channels with no recorded position were counted as unfilled."""
    comm = await connect()
    await subscribe(comm, entity="CameraLifecycle")
    assert redis_server.client_kill("pubsub") >= 1
    for n in range(5):
        await aredis_publish("camera.updated", {"id": n})
    got = await receive(comm, 5)
    assert [m["type"] for m in got] == ["next"] * 5, got
    assert await comm.receive_nothing(timeout=0.5)
    await comm.disconnect()


async def test_since_is_validated(hub: None) -> None:
    comm = await connect()
    reply = await subscribe(comm, since={"camera.events": {"offset": "x"}})
    assert reply["type"] == "error" and reply["payload"][0]["code"] == "invalid_since"
    await comm.disconnect()


async def test_a_subscribe_while_redis_is_down_is_refused_as_unavailable(own_redis: Any) -> None:
    """Issue 25, finding 10: it was answered subscribed, then gap. client.js retries an unavailable one."""
    import asyncio

    with override_settings(SUPERGRAPH_MESSAGING={"REDIS_URL": own_redis.url}):
        try:
            first = await connect()
            assert (await subscribe(first))["type"] == "subscribed"  # the hub runs
            own_redis.stop()
            for _ in range(100):
                if not get_hub().subscriber.connected:
                    break
                await asyncio.sleep(0.05)
            comm = await connect()
            reply = await subscribe(comm, entity="CameraEventsLite")
            assert reply["type"] == "error" and reply["payload"][0]["code"] == "unavailable", reply
            own_redis.start()
            for _ in range(100):
                if get_hub().subscriber.connected:
                    break
                await asyncio.sleep(0.05)
            reply = await subscribe(comm, entity="CameraEventsLite")
            assert reply["type"] == "subscribed", reply
            await comm.disconnect()
            await first.disconnect()
        finally:
            await get_hub().close()


async def test_a_forged_position_is_not_passed_on_and_the_resume_replays_what_was_missed(hub: None,
                                                                                        redis_conn: Any) -> None:
    """Issue 26, item 5: one plain PUBLISH with a real epoch and offset 10**12 became the client's position,
    and its resume replayed 0 of 5 missed events with recovered: true."""
    import json

    comm = await connect()
    reply = await subscribe(comm)
    positions = reply["payload"]["positions"]
    await aredis_publish("camera.events", {"camera_id": 1, "n": 0})
    first = (await comm.receive_json_from(timeout=3))["payload"]
    epoch = first["epoch"]
    forged = {"camera_id": 1, "n": "forged", "_position": {"offset": 10**12, "epoch": epoch}}
    redis_conn.publish("camera.events", json.dumps(forged))
    frame = (await comm.receive_json_from(timeout=3))["payload"]
    assert frame["data"]["n"] == "forged" and "offset" not in frame and "_position" not in frame["data"]
    positions["camera.events"] = {"offset": first["offset"], "epoch": epoch}  # the frames' positions only
    await comm.disconnect()
    for n in range(1, 6):
        await aredis_publish("camera.events", {"camera_id": 1, "n": n, "_position": {"offset": 7, "epoch": "x"}})
    comm = await connect()
    reply = await subscribe(comm, since=positions)
    assert reply["payload"]["recovered"] is True
    got = await receive(comm, 5)
    assert [m["payload"]["data"]["n"] for m in got] == [1, 2, 3, 4, 5]
    assert [m["payload"]["offset"] for m in got] == [2, 3, 4, 5, 6]  # a payload's own _position was dropped
    await comm.disconnect()
    comm = await connect()
    reply = await subscribe(comm, since={"camera.events": {"offset": 10**12, "epoch": epoch}})
    assert reply["payload"]["recovered"] is False  # a position the stream never gave
    await comm.disconnect()


async def test_a_hub_disconnect_under_a_burst_misses_nothing_or_says_so(hub: None, redis_server: Any) -> None:
    """Issue 26, item 6: CLIENT KILL of the hub, then 200 events 1 ms apart: the client got 167/200 and no
    gap (live events moved the hub's position past those the fill still had to send)."""
    import asyncio

    comm = await connect()
    await subscribe(comm)
    assert redis_server.client_kill("pubsub") >= 1
    for n in range(200):
        await aredis_publish("camera.events", {"camera_id": 1, "n": n})
        await asyncio.sleep(0.001)
    frames = []
    while not await comm.receive_nothing(timeout=2):
        frames.append(await comm.receive_json_from())
    got = [f["payload"]["data"]["n"] for f in frames if f["type"] == "next"]
    gaps = sum(f["type"] == "gap" for f in frames)
    print(f"\nhub CLIENT KILL, then 200 events 1 ms apart: {len(set(got))}/200 arrived, {gaps} gap(s), "
          f"{len(got) - len(set(got))} twice")
    assert sorted(set(got)) == list(range(200)) or gaps
    assert len(got) == len(set(got)) and got == sorted(got)
    await comm.disconnect()


async def test_a_resume_is_bounded_in_bytes_before_anything_is_read(hub: None, redis_conn: Any) -> None:
    for n in range(20):
        await aredis_publish("camera.events", {"camera_id": 1, "n": n, "pad": "x" * 1000})
    epoch = redis_conn.hget(streams.keys("camera.events")[1], "e").decode()
    with override_settings(SUPERGRAPH_MESSAGING={**DURABLE, "WS_RECOVERY_MAX_BYTES": 10_000}):
        comm = await connect()  # 19 events after offset 1: about 19 KB, over the bound
        reply = await subscribe(comm, since={"camera.events": {"offset": 1, "epoch": epoch}})
        assert reply["payload"]["recovered"] is False
        assert (await comm.receive_json_from(timeout=3))["type"] == "gap"
        await comm.disconnect()
        comm = await connect()  # 5 events after offset 15: about 5 KB, inside it
        reply = await subscribe(comm, since={"camera.events": {"offset": 15, "epoch": epoch}})
        assert reply["payload"]["recovered"] is True
        assert [m["payload"]["data"]["n"] for m in await receive(comm, 5)] == [15, 16, 17, 18, 19]
        await comm.disconnect()
    conn = get_redis_client().aredis
    assert await history.missed(conn, "camera.events", (1, epoch), 300, 10_000) is None
    found = await history.missed(conn, "camera.events", (15, epoch), 300, 10_000)
    assert found is not None and len(found.events) == 5 and 5000 < found.bytes_read < 5200


async def test_entries_without_a_size_are_read_in_pages_and_still_bounded(hub: None, redis_conn: Any) -> None:
    """Entries appended before entries carried ``b`` (an upgrade): the bound holds while reading."""
    stream, meta, _idem = streams.keys("camera.events")
    redis_conn.hset(meta, mapping={"e": "old", "s": 40})
    for n in range(1, 41):
        redis_conn.xadd(stream, {"o": f"id-{n}", "d": json.dumps({"camera_id": n % 2, "n": n, "pad": "y" * 1000})},
                        id=f"{n}-0")
    conn = get_redis_client().aredis
    assert await history.missed(conn, "camera.events", (0, "old"), 300, 20_000) is None  # 40 KB > 20 KB
    found = await history.missed(conn, "camera.events", (25, "old"), 300, 20_000,
                                  filters.raw_prefilter([filters.Condition("camera_id", "eq", 1)]))
    assert found is not None and [data["n"] for _pos, data in found.events] == [27, 29, 31, 33, 35, 37, 39]
    assert found.events[0][0] == (27, "old")


async def test_reading_history_is_charged_to_the_connections_rate_limit(hub: None, redis_conn: Any) -> None:
    for n in range(40):
        await aredis_publish("camera.events", {"camera_id": 1, "n": n, "pad": "z" * 100_000})
    epoch = redis_conn.hget(streams.keys("camera.events")[1], "e").decode()
    since = {"camera.events": {"offset": 0, "epoch": epoch}}
    with override_settings(SUPERGRAPH_MESSAGING={**DURABLE, "WS_MAX_MESSAGES_PER_SECOND": 50}):
        comm = await connect()  # 4 MB read: 61 messages' worth, over 50
        await comm.send_json_to({"id": "1", "type": "subscribe",
                                 "payload": {"entity": "CameraEvents", "filters": {"camera_id": 2}, "since": since}})
        assert (await comm.receive_output(timeout=3))["code"] == 4429
        comm = await connect()  # the same resume from offset 30: 1 MB, 16 messages' worth
        since["camera.events"]["offset"] = 30
        reply = await subscribe(comm, filters={"camera_id": 2}, since=since)
        assert reply["payload"]["recovered"] is True
        await comm.disconnect()


@pytest.mark.parametrize("encode", [json.dumps, lambda d: serialization.dumps(d).decode(),
                                    lambda d: json.dumps(d, ensure_ascii=False, indent=1)])
def test_the_raw_prefilter_never_rejects_an_event_that_matches(encode: Any) -> None:
    values: list[Any] = [0, 1, -1, 36, 36.0, 10**16, True, False, None, "a", "ab c", "é", 'q"uote', "a/b", "<x>", 2.5]
    rng = random.Random(7)
    for _ in range(3000):
        event = {f: rng.choice(values) for f in ("x", "y") if rng.random() < 0.8}
        if rng.random() < 0.3:
            event["pad"] = rng.choice(values)
        op = rng.choice(["eq", "in"])
        value = rng.choice(values) if op == "eq" else rng.sample(values, 3)
        conditions = CameraEvents.parse_filters({f"x__{op}": value}, 10, declared=False)
        test = filters.raw_prefilter(conditions)
        if test is not None and not test(encode(event).encode()):
            assert not all(c.matches(event) for c in conditions), (event, conditions)
