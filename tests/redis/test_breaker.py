from __future__ import annotations

import asyncio
import logging
import statistics
import time
from typing import Any

import pytest
from django.test import override_settings

from supergraph_messaging import redis_cache
from supergraph_messaging.exceptions import RedisUnavailable
from supergraph_messaging.redis.client import get_redis_client
from tests.support.redis_server import RedisServer


def _outage_warnings(caplog: pytest.LogCaptureFixture) -> int:
    return sum("unreachable" in r.getMessage() and r.levelno == logging.WARNING for r in caplog.records)


@pytest.mark.parametrize("mode", ["sync", "async"])
async def test_fail_open_with_breaker(own_redis: RedisServer, caplog: pytest.LogCaptureFixture,
                                      mode: str) -> None:
    source = {"AA": 1}

    def compute(mac: str) -> dict[str, Any]:
        return {"mac": mac, "v": source[mac]}

    if mode == "sync":
        @redis_cache(key="br:{mac}")
        def lookup(mac: str) -> dict[str, Any]:
            return compute(mac)

        async def call(mac: str) -> Any:
            return lookup(mac)
    else:
        @redis_cache(key="br:{mac}")
        async def alookup(mac: str) -> dict[str, Any]:
            return compute(mac)

        async def call(mac: str) -> Any:
            return await alookup(mac)

    conn = own_redis.client()
    settings = {"REDIS_URL": own_redis.url, "BREAKER_INTERVAL": 0.3}
    with override_settings(SUPERGRAPH_MESSAGING=settings), caplog.at_level(logging.INFO, "supergraph_messaging"):
        assert await call("AA") == {"mac": "AA", "v": 1}
        assert conn.exists("br:AA")
        for outage in (1, 2):
            own_redis.stop()
            extra: list[float] = []
            for i in range(300):
                source["AA"] = outage * 1000 + i
                t0 = time.perf_counter()
                result = await call("AA")
                t1 = time.perf_counter()
                compute("AA")
                t2 = time.perf_counter()
                extra.append((t1 - t0) - (t2 - t1))
                assert result == {"mac": "AA", "v": outage * 1000 + i}  # correct, never stale
            median_ms = statistics.median(extra) * 1000
            print(f"\n[{mode}] outage {outage}: extra delay per call median {median_ms:.3f} ms, "
                  f"max {max(extra) * 1000:.1f} ms over {len(extra)} calls")
            assert median_ms <= 5
            assert _outage_warnings(caplog) == outage  # one warning per outage, not per call
            own_redis.start()
            breaker = get_redis_client().breaker
            deadline = time.monotonic() + 2
            while breaker.failing and time.monotonic() < deadline:  # the probe, on its own connection
                time.sleep(0.02)
            assert not breaker.failing, "the breaker did not close within 2 s of Redis answering"
            source["AA"] = 5
            assert await call("AA") == {"mac": "AA", "v": 5}
            assert conn.get("br:AA") is not None, "caching did not resume"
            conn.delete("br:AA")


# -- the function's own errors are never blamed on Redis ---------------------------------
async def test_function_raising_connection_refused_runs_once_and_breaker_stays_closed(
        redis_conn: Any, caplog: pytest.LogCaptureFixture) -> None:
    from supergraph_messaging.redis.client import get_redis_client

    calls: list[str] = []

    @redis_cache(key="own:{mac}")
    def lookup(mac: str) -> dict[str, Any]:
        calls.append(mac)
        raise ConnectionRefusedError("[Errno 111] the access_control service is down")

    @redis_cache(key="aown:{mac}")
    async def alookup(mac: str) -> dict[str, Any]:
        calls.append("a" + mac)
        await asyncio.wait_for(asyncio.sleep(1), timeout=0.001)  # the service timed out
        return {}

    with caplog.at_level(logging.INFO, "supergraph_messaging"):
        with pytest.raises(ConnectionRefusedError):
            lookup("AA")
        with pytest.raises(TimeoutError):
            await alookup("AA")
    assert calls == ["AA", "aAA"], "the function ran more than once"
    breaker = get_redis_client().breaker
    assert not breaker.failing and breaker.failures == 0
    assert _outage_warnings(caplog) == 0
    assert not redis_conn.exists("own:AA~lease", "aown:AA~lease")  # the leases were given back
    calls.clear()
    with pytest.raises(ConnectionRefusedError):
        lookup("BB")
    assert calls == ["BB"]  # the next call went through the cache again, not around it
    assert get_redis_client().breaker.allow()


@pytest.mark.parametrize("mode", ["sync", "async"])
async def test_redis_lost_during_the_fill_never_reruns_the_function(own_redis: RedisServer, mode: str) -> None:
    calls: list[int] = []

    def compute(x: int) -> int:
        calls.append(x)
        own_redis.kill()  # Redis goes away while the function runs: the final write fails
        return x * 10

    if mode == "sync":
        @redis_cache(key="lost:{x}")
        def f(x: int) -> int:
            return compute(x)

        async def call(x: int) -> Any:
            return f(x)
    else:
        @redis_cache(key="alost:{x}")
        async def af(x: int) -> int:
            return compute(x)

        async def call(x: int) -> Any:
            return await af(x)

    with override_settings(SUPERGRAPH_MESSAGING={"REDIS_URL": own_redis.url}):
        assert await call(4) == 40
    assert calls == [4]


# -- the breaker probes on a connection of its own (issue 25, finding 8) -------------------
def _received(sub: Any, timeout: float) -> list[bytes]:
    got: list[bytes] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        message = sub.get_message(timeout=0.05)
        if message and message["type"] == "message":
            got.append(message["data"])
    return got


@pytest.mark.parametrize("path", ["pipelined", "publish_now", "redis_publish"])
def test_no_event_is_sacrificed_to_probe_after_two_outages(own_redis: RedisServer, path: str) -> None:
    """An event while Redis is down; Redis back; a cached fill during which Redis dies; Redis back.
    1.5 s later an event is published: it arrives, and caching has resumed (the trial lost it)."""
    from supergraph_messaging import redis_publish
    from supergraph_messaging.delivery.pipelined import counters, publisher
    from supergraph_messaging.events import flush_events
    from supergraph_messaging.events.publishing import publish_now
    from supergraph_messaging.redis.client import get_redis_client

    def send(n: int) -> None:
        payload = {"n": n}
        if path == "pipelined":
            publisher.publish("probe.events", payload)
        elif path == "publish_now":
            publish_now("probe.events", payload)
        else:
            try:
                redis_publish("probe.events", payload)
            except RedisUnavailable:  # while down: the documented answer
                return

    @redis_cache(key="probe:{x}")
    def fill(x: int) -> int:
        if x == 1:
            own_redis.stop()  # Redis dies during the fill
        return x

    with override_settings(SUPERGRAPH_MESSAGING={"REDIS_URL": own_redis.url, "BREAKER_INTERVAL": 1.0}):
        get_redis_client().connect()
        own_redis.stop()
        send(0)  # fails: Redis is down
        flush_events(1.0)
        own_redis.start()
        time.sleep(1.1)
        assert fill(1) == 1
        own_redis.start()
        watcher = own_redis.client()
        sub = watcher.pubsub()
        sub.subscribe("probe.events")
        sub.get_message(timeout=1.0)
        time.sleep(1.5)
        published = counters["published"]
        send(1)
        flush_events(2.0)
        assert _received(sub, 1.0) == [b'{"n":1}'], "the first event after Redis answered again was lost"
        if path != "redis_publish":
            assert counters["published"] == published + 1
        assert fill(2) == 2
        assert own_redis.client().exists("probe:2"), "caching had not resumed"
        sub.close()
        watcher.close()


def test_the_breaker_closes_without_traffic_and_no_call_is_the_probe(own_redis: RedisServer,
                                                                    caplog: pytest.LogCaptureFixture) -> None:
    """Redis back: the breaker closes within a probe interval though nobody called, and one line says so."""
    from supergraph_messaging.delivery.pipelined import publisher

    with override_settings(SUPERGRAPH_MESSAGING={"REDIS_URL": own_redis.url, "BREAKER_INTERVAL": 0.2}), \
            caplog.at_level(logging.INFO, "supergraph_messaging"):
        breaker = get_redis_client().breaker
        own_redis.stop()
        publisher.publish("probe.quiet", {"n": 0})
        assert breaker.failing
        time.sleep(0.5)  # probes fail meanwhile, silently
        assert breaker.failing and _outage_warnings(caplog) == 1
        own_redis.start()
        answered = time.monotonic()
        while breaker.failing and time.monotonic() - answered < 2:
            time.sleep(0.01)
        took = time.monotonic() - answered
        print(f"\nthe breaker closed {took * 1000:.0f} ms after Redis answered, with no traffic")
        assert not breaker.failing and took < 1.0
        assert sum("reachable again" in r.getMessage() for r in caplog.records) == 1
