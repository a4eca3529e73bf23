"""A rogue or compromised service behind the gateway (issue 26, attacks 2, 6 and 10).

The federation of tests/gateway/test_gateway.py: the service, the beacon and a
gateway, each a daphne of its own, plus :class:`tests.support.rogue.Rogue`, an HTTP
server listed in ``GATEWAY_SERVICES`` with the channel prefix ``rogue.``
whose ``/__schema`` each test rewrites. Before: the rogue took
``TenantEvents`` (a gateway client received tenants 1, 2 and 3), had the
gateway ``PSUBSCRIBE *``, received every client's DRF token and session
cookie (the cookie opened the service's admin), stalled every other
service's refresh with a schema trickled at 1 byte/s, froze every gateway
WebSocket for 26 s with 8,000 entities, and the gateway's public
``/__schema`` re-exposed a token-only service.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest

from tests.gateway.test_gateway import (  # noqa: F401 - the fixture
    HARMLESS,
    TOKENS,
    Federation,
    federation,
    frames,
    init,
    publish,
    staff_session,
    subscribe,
    user_credentials,
)
from tests.security.test_ws_attacks import rss_mb

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]


@pytest.fixture
def rogue(federation: Federation) -> Iterator[Federation]:  # noqa: F811
    """The federation, with the rogue made harmless again (and read again) afterwards."""
    yield federation
    federation.rogue.trickle = 0.0
    federation.rogue.vary = False
    federation.rogue.set(HARMLESS)
    reread(federation)


def reread(setup: Federation, timeout: float = 10) -> None:
    """Wake the gateway and wait until it has read the rogue's /__schema again."""
    before = sum(r[0] == "GET /__schema" for r in setup.rogue.requests)
    setup.wake()
    deadline = time.monotonic() + timeout
    while sum(r[0] == "GET /__schema" for r in setup.rogue.requests) <= before:
        assert time.monotonic() < deadline, "the gateway did not read the rogue's schema again"
        time.sleep(0.05)
    time.sleep(0.5)  # the read, parse and install


def in_thread(func: Any, *args: Any) -> Any:
    with ThreadPoolExecutor(1) as thread:  # the ORM, from async tests
        return thread.submit(func, *args).result()


def logged(setup: Federation, text: str) -> bool:
    return any(text in line for line in setup.gateway_log)


async def test_a_rogue_cannot_take_another_services_entity(rogue: Federation) -> None:
    rogue.rogue.set([{"entity": "TenantEvents", "channels": ["rogue.tenants"], "filters": {}},
                     {"entity": "Beacon", "channels": ["rogue.beacon"], "filters": {}}, *HARMLESS])
    await asyncio.to_thread(reread, rogue)
    schema = await asyncio.to_thread(rogue.schema)
    assert schema["TenantEvents"]["service"] == "tests" and schema["Beacon"]["service"] == "beacon"
    assert schema["RogueThing"]["service"] == "rogue"
    assert logged(rogue, "Service 'rogue' describes what it may not serve: entity TenantEvents belongs to "
                         "service 'tests'; refused.")
    assert logged(rogue, "entity Beacon belongs to service 'beacon'")
    async with rogue.connect() as ws:
        await init(ws)
        assert (await subscribe(ws, "t", "TenantEvents"))["type"] == "subscribed"
        await asyncio.to_thread(publish, rogue.redis_port, "tenant.events",
                                *({"tenant_id": n, "n": n} for n in (1, 2, 3)))
        await asyncio.to_thread(publish, rogue.redis_port, "rogue.tenants", {"tenant_id": 2, "n": 9})
        got = await frames(ws, lambda out: len(out) >= 1)
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.5):
                got.append(json.loads(await ws.recv()))
    assert [f["payload"]["data"] for f in got] == [{"tenant_id": 1, "n": 1}]  # the service's server filter


async def test_a_rogue_cannot_claim_channels_outside_its_prefixes_or_star(rogue: Federation) -> None:
    rogue.rogue.set([{"entity": "Payroll", "channels": ["private.payroll"]},
                     {"entity": "Everything", "channels": ["*"]},
                     {"entity": "Secrets", "channels": ["secret.events"]},
                     {"entity": "Wider", "channels": ["rogue*"]},
                     {"entity": "RogueOk", "channels": ["rogue.ok.*"]}, *HARMLESS])
    await asyncio.to_thread(reread, rogue)
    for text in ("channel 'private.payroll' of Payroll is outside its channel prefixes ('rogue.')",
                 "channel '*' of Everything would match every channel",
                 "channel 'secret.events' of Secrets lies in service 'tests''s prefix 'secret.'",
                 "channel 'rogue*' of Wider is outside its channel prefixes"):
        assert logged(rogue, text), text
    async with rogue.connect() as ws:
        await init(ws)
        for n, entity in enumerate(("Payroll", "Everything", "Secrets", "Wider")):
            answer = await subscribe(ws, str(n), entity)
            assert answer["type"] == "error" and answer["payload"][0]["code"] == "unknown_entity", answer
        assert (await subscribe(ws, "ok", "RogueOk"))["type"] == "subscribed"
        await asyncio.to_thread(publish, rogue.redis_port, "private.payroll", {"salary": 1})
        await asyncio.to_thread(publish, rogue.redis_port, "rogue.ok.1", {"n": 1})
        [frame] = await frames(ws, lambda out: len(out) >= 1)
        assert frame["id"] == "ok"  # and nothing of private.payroll
    pubsub = httpx.get(f"http://127.0.0.1:{rogue.gateway.port}/__schema")  # anonymous: the services say staff
    assert pubsub.status_code == 403


async def test_a_rogue_sees_no_clients_cookie_or_token_and_its_assertion_opens_nothing_else(
        rogue: Federation) -> None:
    session, token = await asyncio.to_thread(in_thread, user_credentials)
    seen = len(rogue.rogue.requests)
    async with rogue.connect(Cookie=f"sessionid={session}", Authorization=f"Token {token}") as ws:
        await init(ws, token=token)
        assert (await subscribe(ws, "r", "RogueThing"))["type"] == "subscribed"
    asked = [r for r in rogue.rogue.requests[seen:] if r[0] == "POST /__authorize"]
    assert asked, "the gateway asked the rogue"
    for _request, headers, body in asked:
        everything = json.dumps(headers) + body.decode()
        assert session not in everything and token not in everything
        assert "cookie" not in {h.lower() for h in headers}
        assert headers["Authorization"] == f"Service {TOKENS['rogue']}"  # its own, not another's
    assertion = json.loads(asked[-1][2])["assertion"]
    service = f"http://127.0.0.1:{rogue.service.port}"
    # The rogue replays what it got to the service that owns Secret: with its own token, and (had it stolen
    # that service's token) with the right one; and reads that service's schema as the gateway.
    for key in (TOKENS["rogue"], TOKENS["tests"]):
        answer = httpx.post(f"{service}/__authorize", json={"entity": "Secret", "assertion": assertion},
                            headers={"Authorization": f"Service {key}"})
        assert answer.status_code == 403, answer.text
    assert "not signed with this service's SERVICE_TOKEN" in answer.json()["detail"]
    assert httpx.get(f"{service}/__schema", headers={"Authorization": f"Service {TOKENS['rogue']}"}).status_code == 403
    # The cookie the browser has for the gateway is the gateway's; the service's admin never saw it from here.
    admin = httpx.get(f"{service}/admin/auth/user/", cookies={"sessionid": session}, follow_redirects=False)
    assert admin.status_code == 302  # the test database's session is not a staff one either way


async def test_the_gateway_schema_is_no_more_open_than_the_strictest_service(rogue: Federation) -> None:
    rogue.rogue.set(HARMLESS, access="token")
    await asyncio.to_thread(reread, rogue)
    port = rogue.gateway.port
    session = await asyncio.to_thread(in_thread, staff_session)
    for path in ("/__schema", "/__asyncapi"):
        refused = httpx.get(f"http://127.0.0.1:{port}{path}", cookies={"sessionid": session})
        assert refused.status_code == 403 and "strictest" in refused.json()["detail"], refused.text
        assert httpx.get(f"http://127.0.0.1:{port}{path}").status_code == 403
    rogue.rogue.set(HARMLESS, access="public")  # a rogue claiming "public" loosens nothing
    await asyncio.to_thread(reread, rogue)
    assert httpx.get(f"http://127.0.0.1:{port}/__schema").status_code == 403
    assert httpx.get(f"http://127.0.0.1:{port}/__schema", cookies={"sessionid": session}).status_code == 200


async def ping_rtts(ws: Any, stop: asyncio.Event, rtts: list[float]) -> None:
    """The gateway's answer time to a protocol ping, every 50 ms."""
    n = 0
    while not stop.is_set():
        n += 1
        sent = time.monotonic()
        await ws.send(json.dumps({"type": "ping", "payload": {"n": n}}))
        while True:
            message = json.loads(await ws.recv())
            if message["type"] == "pong" and message.get("payload", {}).get("n") == n:
                break
        rtts.append(time.monotonic() - sent)
        await asyncio.sleep(0.05)


async def restart_noticed_in(federation: Federation) -> float:  # noqa: F811 - not the fixture
    """Stop the service, start it again; seconds from its port answering to its entity being subscribable."""
    federation.service.stop()
    async with federation.connect() as ws:
        await init(ws)
        down = await subscribe(ws, "c0", "CameraEvents")  # the gateway learns it is down
        assert down["type"] == "error" and down["payload"][0]["code"] == "unavailable", down
        await asyncio.sleep(1)  # its loop backs off meanwhile
        await asyncio.to_thread(federation.start_service)  # returns once the port answers
        started = time.monotonic()
        n = 0
        while True:
            n += 1
            answer = await subscribe(ws, f"c{n}", "CameraEvents")
            if answer["type"] == "subscribed":
                return time.monotonic() - started
            assert answer["payload"][0]["code"] == "unavailable", answer
            assert time.monotonic() - started < 30
            await asyncio.sleep(0.05)


HOSTILE = {
    "trickled at 1 byte/s": (None, 1.0),
    "8,000 entities": (json.dumps({"subscriptions": [{"entity": f"E{n}", "channels": [f"rogue.e{n}"]}
                                                     for n in range(8000)]}).encode(), 0.0),
    "50 MB": (b'{"subscriptions": [' + b'{"entity": "E", "channels": ["rogue.e"]},' * 1_250_000 + b"{}]}", 0.0),
}


@pytest.mark.parametrize("kind", list(HOSTILE))
async def test_a_hostile_schema_delays_no_other_service_and_no_websocket(rogue: Federation, kind: str) -> None:
    raw, trickle = HOSTILE[kind]
    rogue.rogue.set(HARMLESS, raw=raw)
    rogue.rogue.trickle = trickle
    rogue.rogue.vary = kind == "8,000 entities"  # parsed at every read, not once (the others are never parsed)
    baseline = rss_mb(rogue.gateway.proc.pid)
    rtts: list[float] = []
    stop = asyncio.Event()
    peak = baseline
    async with rogue.connect() as witness:
        await init(witness)
        pinger = asyncio.create_task(ping_rtts(witness, stop, rtts))
        for _ in range(3):  # the gateway reads the hostile schema again and again meanwhile
            rogue.wake()
            await asyncio.sleep(0.3)
        noticed = await restart_noticed_in(rogue)
        for _ in range(20):
            peak = max(peak, rss_mb(rogue.gateway.proc.pid))
            rogue.wake()
            await asyncio.sleep(0.1)
        stop.set()
        await pinger
    schema = await asyncio.to_thread(rogue.schema)
    print(f"\n{kind}: the service's restart noticed in {noticed:.2f} s; gateway ping RTT max "
          f"{max(rtts) * 1000:.1f} ms over {len(rtts)}; RSS {baseline:.0f} -> {peak:.0f} MB")
    assert noticed < 2
    assert max(rtts) < 0.1 and len(rtts) >= 20
    assert peak - baseline <= 20
    assert schema["RogueThing"]["available"] is False and "E1" not in schema
    problems = {"trickled at 1 byte/s": "did not answer in full within GATEWAY_TIMEOUT",
                "8,000 entities": "it describes 8000 entities; GATEWAY_MAX_ENTITIES is 500",
                "50 MB": "answered more than GATEWAY_MAX_SCHEMA_BYTES (1048576)"}
    assert logged(rogue, problems[kind]), rogue.gateway_log[-5:]
