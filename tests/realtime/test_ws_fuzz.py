"""Fuzz: random and malformed frames never crash the consumer, and others keep being served."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import pytest
from channels.testing import WebsocketCommunicator
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from supergraph_messaging import aredis_publish
from supergraph_messaging.realtime.hub import get_hub
from tests.support.asgi import application

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

ORIGIN = (b"origin", b"http://testserver")
DOCUMENTED_TYPES = {"connection_ack", "subscribed", "next", "error", "complete", "gap", "ping", "pong"}
DOCUMENTED_CODES = {4400, 4401, 4403, 4408, 4409, 4429, 4008}

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=10,
)
types = st.sampled_from(["connection_init", "subscribe", "complete", "ping", "pong", "next", "bogus", ""])
entities = st.sampled_from(["CameraEvents", "Secret", "TenantEvents", "Nope", ""]) | json_values
filter_keys = st.sampled_from(["camera_id", "camera_id__in", "camera_id__gt", "complex_id__in", "secret",
                               "camera_id__regex", "event_type__icontains", "__", ""])
messages = st.fixed_dictionaries(
    {"type": types},
    optional={
        "id": st.text(max_size=5) | json_values,
        "payload": st.fixed_dictionaries({}, optional={
            "entity": entities,
            "filters": st.dictionaries(filter_keys, json_values, max_size=3) | json_values,
            "fields": st.lists(st.text(max_size=5), max_size=3) | json_values,
            "token": json_values,
        }) | json_values,
    },
)
frames = st.one_of(
    messages.map(json.dumps),
    json_values.map(json.dumps),
    st.text(min_size=1, max_size=200),
    st.binary(min_size=1, max_size=50),
)


@pytest.fixture
def loop(redis_conn: Any) -> Iterator[asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    yield loop
    loop.run_until_complete(get_hub_close())
    pending = asyncio.all_tasks(loop)
    for task in pending:
        task.cancel()
    if pending:  # gather() of nothing would make its future on another loop
        loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
    loop.close()


async def get_hub_close() -> None:
    await get_hub().close()


async def check_frames(sequence: list[str | bytes], init_first: bool) -> None:
    comm = WebsocketCommunicator(application, "/subscribe", headers=[ORIGIN])
    connected, _ = await comm.connect()
    assert connected
    if init_first:
        await comm.send_to(text_data='{"type":"connection_init"}')
        assert (await comm.receive_json_from())["type"] == "connection_ack"
    closed = False
    for frame in sequence:
        if isinstance(frame, bytes):
            await comm.send_to(bytes_data=frame)
        else:
            await comm.send_to(text_data=frame)
        while True:
            if await comm.receive_nothing(timeout=0.01):  # re-raises anything the consumer raised
                break
            output = await comm.receive_output()
            if output["type"] == "websocket.close":
                assert output["code"] in DOCUMENTED_CODES, output
                closed = True
                break
            message = json.loads(output["text"])
            assert message["type"] in DOCUMENTED_TYPES, message
            if message["type"] == "error":
                assert message["payload"][0]["code"] and message["payload"][0]["message"]
        if closed:
            break
    if not closed:
        await comm.disconnect()


def test_fuzzed_frames(loop: asyncio.AbstractEventLoop) -> None:
    # A well-behaved client, served throughout the fuzzing.
    async def start_witness() -> WebsocketCommunicator:
        comm = WebsocketCommunicator(application, "/subscribe", headers=[ORIGIN])
        await comm.connect()
        await comm.send_json_to({"type": "connection_init"})
        await comm.receive_json_from()
        await comm.send_json_to({"id": "w", "type": "subscribe", "payload": {"entity": "CameraEventsLite"}})
        assert (await comm.receive_json_from())["type"] == "subscribed"
        return comm

    witness = loop.run_until_complete(start_witness())
    count = {"examples": 0, "frames": 0}

    async def answer_pings() -> None:
        """The witness answers the server's pings as a live client would, however long the fuzzing takes."""
        while not await witness.receive_nothing(timeout=0):
            message = await witness.receive_json_from()
            assert message["type"] == "ping", message
            await witness.send_json_to({"type": "pong", "payload": message.get("payload")})

    @settings(max_examples=1000, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(st.lists(frames, min_size=1, max_size=3), st.booleans())
    def run(sequence: list[str | bytes], init_first: bool) -> None:
        count["examples"] += 1
        count["frames"] += len(sequence)
        loop.run_until_complete(check_frames(sequence, init_first))
        loop.run_until_complete(answer_pings())

    run()

    async def witness_still_served() -> None:
        await aredis_publish("camera.events", {"event_type": "after-fuzz"})
        message = await witness.receive_json_from(timeout=3)
        while message["type"] == "ping":  # a long run: the server checked the witness is alive
            await witness.send_json_to({"type": "pong", "payload": message.get("payload")})
            message = await witness.receive_json_from(timeout=3)
        assert message["id"] == "w" and message["payload"]["data"] == {"event_type": "after-fuzz"}
        await witness.disconnect()

    loop.run_until_complete(witness_still_served())
    print(f"\nfuzz: {count['examples']} connections, {count['frames']} frames")
    assert count["frames"] >= 1000
