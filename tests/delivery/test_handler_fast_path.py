"""Handlers started inline (HandlerQueues.put / Handlers.start): order, timeouts and errors still hold.

A message for an idle channel runs its async handlers on the receive loop;
a handler that waits moves to the channel's worker, and later messages queue
behind it. These tests mix handlers that finish at once with ones that wait.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import pytest
from django.test import override_settings

from supergraph_messaging import RedisSubscriber, aredis_publish

pytestmark = pytest.mark.django_db(transaction=False)


async def until(predicate: Any, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.01)


async def started(*channels: str, **handlers: Any) -> RedisSubscriber:
    sub = RedisSubscriber()
    for channel, funcs in handlers.items():
        for func in funcs:
            sub.on(channel.replace("_", "."))(func)
    await sub.start()
    await sub.wait_subscribed(*channels)
    return sub


async def test_a_channel_keeps_its_order_when_some_messages_wait(redis_conn: Any) -> None:
    seen: list[int] = []

    async def handler(data: dict[str, int]) -> None:
        if data["n"] % 7 == 0:
            await asyncio.sleep(0.005)  # this one goes to the worker; the next ones queue behind it
        seen.append(data["n"])

    sub = await started("fp.order", fp_order=[handler])
    for n in range(100):
        await aredis_publish("fp.order", {"n": n})
    await until(lambda: len(seen) == 100)
    assert seen == list(range(100))
    assert sub.queued == 0
    await sub.stop()


async def test_handlers_of_one_message_run_in_order_when_the_first_waits(redis_conn: Any) -> None:
    calls: list[str] = []

    async def first(data: Any) -> None:
        calls.append(f"first-start-{data['n']}")
        await asyncio.sleep(0.02)
        calls.append(f"first-end-{data['n']}")

    async def second(data: Any) -> None:
        calls.append(f"second-{data['n']}")

    sub = await started("fp.two", fp_two=[first, second])
    await aredis_publish("fp.two", {"n": 1})
    await aredis_publish("fp.two", {"n": 2})
    await until(lambda: len(calls) == 6)
    assert calls == ["first-start-1", "first-end-1", "second-1", "first-start-2", "first-end-2", "second-2"]
    await sub.stop()


async def test_a_waiting_handler_still_gets_its_timeout(redis_conn: Any, caplog: pytest.LogCaptureFixture) -> None:
    seen: list[int] = []

    async def handler(data: dict[str, int]) -> None:
        if data["n"] == 0:
            await asyncio.sleep(30)
        seen.append(data["n"])

    with override_settings(SUPERGRAPH_MESSAGING={"HANDLER_TIMEOUT": 0.3}), \
            caplog.at_level(logging.ERROR, "supergraph_messaging"):
        sub = await started("fp.slow", fp_slow=[handler])
        began = time.monotonic()
        for n in range(3):
            await aredis_publish("fp.slow", {"n": n})
        await until(lambda: seen == [1, 2])
        assert 0.25 < time.monotonic() - began < 5
        assert sub.handlers.errors == 1
        assert "took longer than HANDLER_TIMEOUT" in caplog.text
        await sub.stop()


async def test_a_handler_failing_at_once_is_logged_and_the_next_still_runs(
        redis_conn: Any, caplog: pytest.LogCaptureFixture) -> None:
    seen: list[Any] = []

    async def failing(data: dict[str, int]) -> None:
        if data["n"] == 0:
            raise ValueError("boom")
        if data["n"] == 1:
            raise asyncio.CancelledError  # the handler's own, not the loop being cancelled

    async def after(data: dict[str, int]) -> None:
        seen.append(data["n"])

    with caplog.at_level(logging.ERROR, "supergraph_messaging"):
        sub = await started("fp.fail", fp_fail=[failing, after])
        for n in range(3):
            await aredis_publish("fp.fail", {"n": n})
        await until(lambda: seen == [0, 1, 2])
        assert sub.handlers.errors == 2
        assert sub.running and "boom" in caplog.text
        await sub.stop()


async def test_stop_waits_for_a_handler_that_moved_to_the_worker(redis_conn: Any) -> None:
    finished: list[int] = []

    async def handler(data: dict[str, int]) -> None:
        await asyncio.sleep(0.2)
        finished.append(data["n"])

    sub = await started("fp.drain", fp_drain=[handler])
    await aredis_publish("fp.drain", {"n": 1})
    await until(lambda: sub.queued == 1)
    await sub.stop()
    assert finished == [1]
