from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from supergraph_messaging.connection import reset_clients

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def _fresh_clients() -> Iterator[None]:
    """Each test gets fresh Redis clients (async ones are bound to the test's loop)."""
    reset_clients()
    yield
    from supergraph_messaging.events import flush_events

    flush_events(2)  # confirmations of this test's events must not reach the next test's receivers
    reset_clients()


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
    env["DJANGO_SETTINGS_MODULE"] = "tests.settings"
    env["SGM_TEST_DB_NAME"] = str(connection.settings_dict["NAME"])
    env["PYTHONPATH"] = str(ROOT)
    env["PYTHONUNBUFFERED"] = "1"
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
        self.handled: list[Any] = []
        self.subscriber = RedisSubscriber(url=url)
        self.on_message: Callable[[Any, str], Any] | None = None
        for channel in channels:
            self.subscriber.on(channel)(self._handle)
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    async def _handle(self, data: Any, channel: str) -> None:
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
