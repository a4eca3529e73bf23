from __future__ import annotations

import asyncio
import datetime
import decimal
import logging
import threading
import time
import uuid
from typing import Any

import pytest

from supergraph_messaging import RedisSubscriber, aredis_publish, get_redis_client, redis_publish
from supergraph_messaging.signals import reconnected
from tests.support.redis_server import RedisServer

pytestmark = [pytest.mark.django_db(transaction=False), pytest.mark.usefixtures("delivery", "topology")]


def plain(data: Any) -> Any:
    """The payload as published: durable delivery adds where it sits in the channel's stream."""
    if isinstance(data, dict) and "_position" in data:
        data = dict(data)
        assert set(data.pop("_position")) == {"offset", "epoch"}
    return data


class Inbox:
    """Collects (channel, data) and lets a test await a count."""

    def __init__(self) -> None:
        self.items: list[tuple[str, Any]] = []
        self._changed = asyncio.Event()

    async def handler(self, data: Any, channel: str) -> None:
        self.items.append((channel, plain(data)))
        self._changed.set()

    async def wait(self, count: int, timeout: float = 5.0) -> list[tuple[str, Any]]:
        deadline = time.monotonic() + timeout
        while len(self.items) < count:
            self._changed.clear()
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"got {len(self.items)} of {count} messages")
            try:
                await asyncio.wait_for(self._changed.wait(), remaining)
            except TimeoutError:
                pass
        return self.items


async def test_publish_returns_receiver_count(redis_conn: Any, topology: str) -> None:
    """On a Cluster the count is of the receiving node's subscribers (Redis's PUBLISH), so 0 or 1 here."""
    assert redis_publish("nobody.listens", {"a": 1}) == 0
    sub = RedisSubscriber()
    inbox = Inbox()
    sub.on("t.count")(inbox.handler)
    await sub.start()
    expected = {0, 1} if topology == "cluster" else {1}
    try:
        assert await aredis_publish("t.count", {"a": 1}) in expected
        assert redis_publish("t.count", {"a": 2}) in expected
        await inbox.wait(2)
    finally:
        await sub.stop()


async def test_exact_and_glob_in_order_per_channel(redis_conn: Any) -> None:
    sub = RedisSubscriber()
    exact, glob = Inbox(), Inbox()
    sub.on("camera.events")(exact.handler)
    sub.on("camera.events.complex:*")(glob.handler)
    await sub.start()
    try:
        for i in range(200):
            await aredis_publish("camera.events", {"n": i})
            await aredis_publish(f"camera.events.complex:{i % 3}", {"n": i})
        await exact.wait(200)
        await glob.wait(200)
    finally:
        await sub.stop()
    assert [d["n"] for _, d in exact.items] == list(range(200))
    assert {c for c, _ in exact.items} == {"camera.events"}
    for complex_id in range(3):
        got = [d["n"] for c, d in glob.items if c == f"camera.events.complex:{complex_id}"]
        assert got == [i for i in range(200) if i % 3 == complex_id]


async def test_rich_types_publish_as_django_json(redis_conn: Any) -> None:
    sub = RedisSubscriber()
    received: list[Any] = []
    done = asyncio.Event()

    @sub.on("t.types")
    async def handler(data: Any) -> None:  # one parameter: no channel
        received.append(plain(data))
        done.set()

    await sub.start()
    when = datetime.datetime(2026, 1, 2, 3, 4, 5, 123000, tzinfo=datetime.UTC)
    ident = uuid.UUID("12345678-1234-5678-1234-567812345678")
    try:
        await aredis_publish("t.types", {"when": when, "id": ident, "price": decimal.Decimal("1.10"),
                                         "day": datetime.date(2026, 1, 2)})
        await asyncio.wait_for(done.wait(), 5)
    finally:
        await sub.stop()
    assert received == [{"when": "2026-01-02T03:04:05.123Z", "id": str(ident), "price": "1.10",
                         "day": "2026-01-02"}]


async def test_raising_handler_is_isolated(redis_conn: Any, caplog: pytest.LogCaptureFixture) -> None:
    sub = RedisSubscriber()
    good = Inbox()

    @sub.on("t.err")
    async def bad(data: Any) -> None:
        if data["n"] == 0:
            raise RuntimeError("boom in handler")

    sub.on("t.err")(good.handler)
    await sub.start()
    try:
        with caplog.at_level(logging.ERROR, "supergraph_messaging"):
            await aredis_publish("t.err", {"n": 0})
            await aredis_publish("t.err", {"n": 1})
            await good.wait(2)
    finally:
        await sub.stop()
    # In order on a Cluster too: every PUBLISH enters at the client's default node (CI once saw [1, 0]
    # when redis-py sent the first one elsewhere; test_cluster.py counts the nodes).
    assert [d["n"] for _, d in good.items] == [0, 1]
    errors = [r for r in caplog.records if "bad" in r.getMessage()]
    assert len(errors) == 1 and errors[0].exc_info and "boom in handler" in str(errors[0].exc_info[1])
    assert sub.handler_errors == 1


async def test_malformed_message_is_skipped(redis_conn: Any, caplog: pytest.LogCaptureFixture) -> None:
    sub = RedisSubscriber()
    inbox = Inbox()
    sub.on("t.bad")(inbox.handler)
    await sub.start()
    try:
        with caplog.at_level(logging.WARNING, "supergraph_messaging"):
            redis_conn.publish("t.bad", b"\xff not json {")
            redis_conn.publish("t.bad", b'{"ok": true}')
            await inbox.wait(1)
    finally:
        await sub.stop()
    assert inbox.items == [("t.bad", {"ok": True})]
    assert sub.malformed == 1
    assert any("malformed" in r.getMessage() and "t.bad" in r.getMessage() for r in caplog.records)


async def test_handler_added_after_start_receives(redis_conn: Any) -> None:
    sub = RedisSubscriber()
    await sub.start()
    inbox = Inbox()
    try:
        sub.on("t.late")(inbox.handler)
        sub.on("t.late.*")(inbox.handler)
        await sub.wait_subscribed("t.late", "t.late.*")
        await aredis_publish("t.late", {"n": 1})
        await aredis_publish("t.late.x", {"n": 2})
        await inbox.wait(2)
    finally:
        await sub.stop()
    assert inbox.items == [("t.late", {"n": 1}), ("t.late.x", {"n": 2})]


async def test_sync_handler_runs_off_the_event_loop(redis_conn: Any) -> None:
    sub = RedisSubscriber()
    threads: list[int] = []
    done = threading.Event()

    @sub.on("t.sync")
    def handler(data: Any, channel: str) -> None:
        threads.append(threading.get_ident())
        done.set()

    await sub.start()
    try:
        await aredis_publish("t.sync", {})
        await asyncio.get_running_loop().run_in_executor(None, done.wait, 5)
    finally:
        await sub.stop()
    assert threads and threads[0] != threading.get_ident()


async def test_stop_closes_the_connection(redis_conn: Any) -> None:
    sub = RedisSubscriber()
    sub.on("t.stop")(Inbox().handler)
    await sub.start()
    assert redis_conn.pubsub_numsub("t.stop") == [(b"t.stop", 1)]
    await sub.stop()
    for _ in range(100):
        if redis_conn.pubsub_numsub("t.stop") == [(b"t.stop", 0)]:
            break
        await asyncio.sleep(0.01)
    assert redis_conn.pubsub_numsub("t.stop") == [(b"t.stop", 0)]
    assert not sub.running


async def _fault_run(server: RedisServer, fault: str) -> None:
    """Publish a numbered stream while the fault happens; count what was lost."""
    sub = RedisSubscriber(url=server.url)
    inbox = Inbox()
    sub.on("t.fault")(inbox.handler)
    reconnects: list[float] = []
    sub.on_reconnect(lambda: reconnects.append(time.monotonic()))
    signals: list[Any] = []

    def on_signal(sender: Any, subscriber: RedisSubscriber, **kw: Any) -> None:
        signals.append(subscriber)

    reconnected.connect(on_signal)
    await sub.start()
    client = get_redis_client(server.url)
    sent = 0
    try:
        for _ in range(20):
            await client.apublish("t.fault", {"n": sent})
            sent += 1
        await inbox.wait(20)
        fault_at = time.monotonic()
        if fault == "restart":
            server.restart()
        else:
            assert server.client_kill("pubsub") == 1
        gap_sent = 0
        # Keep publishing (each publish that reaches Redis counts as sent).
        deadline = time.monotonic() + 3
        while not reconnects and time.monotonic() < deadline:
            try:
                await client.apublish("t.fault", {"n": sent})
                sent += 1
                gap_sent += 1
            except ConnectionError:
                pass
            await asyncio.sleep(0.005)
        assert reconnects, "subscriber did not reconnect within 3 s"
        await sub.wait_subscribed("t.fault")
        resubscribed_after = time.monotonic() - fault_at
        for _ in range(20):
            await client.apublish("t.fault", {"n": sent})
            sent += 1
        # Until the last one arrived (not "one more than now": all 20 may be in already, as durable
        # delivery's are when they come inline, and then no further one ever comes).
        deadline = time.monotonic() + 5
        while not any(d["n"] == sent - 1 for _, d in inbox.items) and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        await asyncio.sleep(0.2)
    finally:
        reconnected.disconnect(on_signal)
        await sub.stop()
    got = [d["n"] for _, d in inbox.items]
    lost = sent - len(got)
    print(f"\n[{fault}] resubscribed after {resubscribed_after * 1000:.0f} ms; "
          f"published during gap: {gap_sent}, lost: {lost} of {sent}")
    assert resubscribed_after < 2.0
    assert got == sorted(got), "messages out of order"
    assert got[-20:] == list(range(sent - 20, sent)), "messages after the reconnect were lost"
    assert 0 <= lost <= gap_sent
    assert signals == [sub]


async def test_resubscribes_after_redis_restart(own_redis: RedisServer) -> None:
    await _fault_run(own_redis, "restart")


async def test_resubscribes_after_client_kill(own_redis: RedisServer) -> None:
    await _fault_run(own_redis, "client_kill")


async def test_an_unsubscribe_on_a_killed_connection_reconnects_without_the_dropped_channels(
    own_redis: RedisServer,
) -> None:
    """redis-py reconnects a Pub/Sub connection inside a failed command and resubscribes every channel it
    still holds, the one being dropped included. The subscriber must not keep that connection: its receive
    loop would go on reading with no reconnect seen (no hooks, no ``reconnected``) and the dropped channels
    subscribed in Redis. The idle-hub restart test of test_ws_e2e saw such a leftover once in CI."""
    sub = RedisSubscriber(url=own_redis.url, isolate_handlers=False)
    parked, release = asyncio.Event(), asyncio.Event()

    async def slow(data: Any) -> None:  # holds the receive loop, so it cannot see the kill first
        parked.set()
        await release.wait()

    async def noop(data: Any) -> None:
        pass

    sub.add_handler("t.slow", slow)
    for channel in ("t.keep", "t.drop1", "t.drop2"):
        sub.add_handler(channel, noop)
    reconnects: list[float] = []
    sub.on_reconnect(lambda: reconnects.append(time.monotonic()))
    await sub.start()
    conn = own_redis.client()
    try:
        await sub.wait_subscribed("t.slow", "t.keep", "t.drop1", "t.drop2")
        conn.publish("t.slow", "{}")
        await asyncio.wait_for(parked.wait(), 5)
        assert own_redis.client_kill("pubsub") == 1
        sub.remove_handler("t.drop1", noop)  # the first write after the kill draws the reset ...
        sub.remove_handler("t.drop2", noop)  # ... the second fails, and redis-py reconnects inside it
        await asyncio.sleep(0.3)
        release.set()
        deadline = time.monotonic() + 5
        while not reconnects and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        await sub.wait_subscribed("t.keep")
        counts = {name.decode(): n for name, n in conn.pubsub_numsub("t.slow", "t.keep", "t.drop1", "t.drop2")}
    finally:
        release.set()
        await sub.stop()
        conn.close()
    assert counts == {"t.slow": 1, "t.keep": 1, "t.drop1": 0, "t.drop2": 0}
    assert len(reconnects) == 1


async def test_start_against_unreachable_redis_names_url() -> None:
    from supergraph_messaging.exceptions import RedisUnavailable
    from tests.support.redis_server import free_port

    sub = RedisSubscriber(url=f"redis://:secret@127.0.0.1:{free_port()}/0")
    with pytest.raises(RedisUnavailable) as info:
        await sub.start()
    assert "127.0.0.1" in str(info.value) and "secret" not in str(info.value)


@pytest.mark.django_db(transaction=True)
async def test_sync_handlers_get_fresh_database_connections(redis_conn: Any) -> None:
    """Sync handlers run as Channels runs ORM code: old connections closed around each call,
    so a worker survives a database restart (with CONN_MAX_AGE=0, each call has its own)."""
    from django.db.backends.signals import connection_created

    from tests.testapp.models import CameraModel

    opened: list[int] = []
    seen: list[int] = []
    done = asyncio.Event()
    loop = asyncio.get_running_loop()

    def on_connect(sender: Any, connection: Any, **kwargs: Any) -> None:
        opened.append(threading.get_ident())

    def handler(data: Any) -> None:
        CameraModel.objects.count()
        seen.append(threading.get_ident())
        if len(seen) == 3:
            loop.call_soon_threadsafe(done.set)

    connection_created.connect(on_connect)

    sub = RedisSubscriber()
    sub.on("db.hygiene")(handler)
    await sub.start()
    try:
        for i in range(3):
            await aredis_publish("db.hygiene", {"n": i})
            await asyncio.sleep(0.05)
        await asyncio.wait_for(done.wait(), 5)
    finally:
        await sub.stop()
        connection_created.disconnect(on_connect)
    assert opened.count(seen[0]) == 3, "a sync handler kept one database connection across calls"
