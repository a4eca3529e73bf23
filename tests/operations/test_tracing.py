"""OpenTelemetry: one API write is one trace, from the web process to the worker's handlers and the WebSocket."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import wait_for
from tests.operations.services import subscribed, web_and_worker
from tests.support.redis_server import RedisServer

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow, pytest.mark.topology("single")]


def spans(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


async def test_one_api_write_is_one_trace_across_the_web_process_and_the_worker(
        redis_server: RedisServer, redis_conn: Any, tmp_path: Path) -> None:
    trace_file = tmp_path / "spans.jsonl"
    with web_and_worker(redis_server.port, redis_conn, SGM_TEST_TRACE_FILE=str(trace_file)) as (server, worker):
        async with subscribed(server, "ChaosRows") as ws:
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}") as http:
                assert (await http.post("/chaos/rows/3/")).status_code == 200  # one API write
            event = json.loads(await ws.recv())
            assert event["type"] == "next" and event["payload"]["data"]["row"] == 3
        wait_for(lambda: redis_conn.llen("chaos:order") == 1, timeout=15)
        deadline = time.monotonic() + 5
        names = {"chaos.rows publish", "chaos.rows relay", "chaos.rows process", "chaos.rows deliver"}
        while not names <= {s["name"] for s in spans(trace_file)} and time.monotonic() < deadline:
            time.sleep(0.1)
    recorded = spans(trace_file)
    (publish,) = [s for s in recorded if s["name"] == "chaos.rows publish"]
    trace = [s for s in recorded if s["trace_id"] == publish["trace_id"]]
    by_name: dict[str, list[dict[str, Any]]] = {}
    for s in trace:
        by_name.setdefault(s["name"], []).append(s)
    assert set(by_name) == names, by_name.keys()
    assert publish["kind"] == "PRODUCER" and publish["pid"] == server.proc.pid
    (deliver,) = by_name["chaos.rows deliver"]
    assert deliver["pid"] == server.proc.pid and deliver["attributes"]["supergraph_messaging.deliveries"] == 1
    (relay,) = by_name["chaos.rows relay"]
    assert relay["pid"] == worker.pid
    handlers = {s["attributes"]["code.function"] for s in by_name["chaos.rows process"]}
    assert "tests.testapp.subscribers.chaos_effect" in handlers  # once=True, in its transaction
    assert all(s["pid"] == worker.pid for s in by_name["chaos.rows process"])
    assert all(s["parent_id"] == publish["span_id"] for s in trace if s is not publish)
    assert len({s["pid"] for s in trace}) == 2
    print(f"\none API write: one trace of {len(trace)} spans in 2 processes: "
          + ", ".join(f"{n} x{len(v)}" for n, v in sorted(by_name.items())))


def test_a_traceparent_from_a_message_is_bounded_and_a_malformed_one_joins_no_trace() -> None:
    from opentelemetry import trace as otel

    from supergraph_messaging import tracing

    good = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    assert otel.get_current_span(tracing.parent({"traceparent": good})).get_span_context().trace_id == int(
        "0af7651916cd43dd8448eb211c80319c", 16)
    for bad in ("garbage", "00-" + "0" * 32 + "-" + "0" * 16 + "-01", good.replace("00-", "ff-"), 42, None):
        context = tracing.parent({"traceparent": bad})
        assert context is None or not otel.get_current_span(context).get_span_context().is_valid
    assert tracing.parent({"traceparent": good + "x" * 200}) is None  # over 128 characters: not even parsed
    assert tracing.parent("not a dict") is None
    assert not tracing.active()  # the test process has no SDK provider: every span is skipped
    payload = {"n": 1}
    assert tracing.published("c", payload) is payload
