"""Gateway mode across real processes: two services and a gateway, each a daphne of its own.

The service (tests.testapp's entities) and the beacon (one entity of its
own) are separate processes; the gateway has none of their code, so
everything it serves it learned from their ``/__schema``. It authenticates
its clients itself (the test database's sessions and tokens) and everything
it lets through it was told by the services' ``/__authorize``, from a signed
assertion of the user. A third, hostile service (:class:`tests.support.rogue.Rogue`)
sits behind the same gateway for tests/security/test_gateway_attacks.py.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
import redis
import websockets

from tests.gateway.test_asyncapi import node  # noqa: F401 - fixture
from tests.realtime.test_client_js import CLIENT_JS, wait_for
from tests.realtime.test_ws_e2e import Daphne
from tests.support.browser import browser_page  # noqa: F401 - fixture
from tests.support.redis_server import RedisServer
from tests.support.rogue import Rogue

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]
TOKENS = {name: f"gateway-tests-{name}-service-token-0123456789" for name in ("tests", "beacon", "rogue")}
TOKEN = TOKENS["tests"]


@dataclass
class Federation:
    redis_port: int
    service: Daphne
    beacon: Daphne
    gateway: Daphne
    rogue: Rogue
    gateway_log: list[str] = field(default_factory=list)

    def start_service(self) -> None:
        self.service = Daphne(self.redis_port, port=self.service.port, SGM_SERVICE_TOKEN=TOKENS["tests"])

    def schema(self, path: str = "/__schema") -> dict[str, Any]:
        """The gateway's /__schema as its staff see it (the services' SCHEMA_ACCESS is "staff")."""
        with ThreadPoolExecutor(1) as thread:  # the ORM, from sync and async tests alike
            session = thread.submit(staff_session).result()
        response = httpx.get(f"http://127.0.0.1:{self.gateway.port}{path}", cookies={"sessionid": session})
        assert response.status_code == 200, response.text
        if path != "/__schema":
            return response.json()  # type: ignore[no-any-return]
        return {s["entity"]: s for s in response.json()["subscriptions"]}

    def connect(self, **headers: str) -> Any:
        return websockets.connect(f"ws://127.0.0.1:{self.gateway.port}/subscribe",
                                  origin=websockets.Origin(f"http://127.0.0.1:{self.gateway.port}"),
                                  additional_headers=headers or None)

    def wake(self) -> None:
        """What a service's start does: every gateway reads every /__schema now."""
        publish(self.redis_port, "supergraph_messaging.services", {"service": "rogue", "event": "started"})


#: What the rogue serves until a test makes it hostile.
HARMLESS = [{"entity": "RogueThing", "channels": ["rogue.things"], "filters": {}}]


@pytest.fixture(scope="module")
def federation(redis_server: RedisServer) -> Iterator[Federation]:
    """One set of processes for the module (each test leaves every process running, as it found it)."""
    service = Daphne(redis_server.port, SGM_SERVICE_TOKEN=TOKENS["tests"])
    beacon = Daphne(redis_server.port, SGM_SERVICE_TOKEN=TOKENS["beacon"], SGM_TEST_ROLE="beacon")
    rogue = Rogue(HARMLESS)
    services = {
        "tests": {"url": f"http://127.0.0.1:{service.port}", "channels": ["camera.", "secret.", "tenant.", "chaos."]},
        "beacon": {"url": f"http://127.0.0.1:{beacon.port}", "entities": ["Beacon"], "channels": ["beacon."]},
        "rogue": {"url": rogue.url, "channels": ["rogue."]},
    }
    gateway = Daphne(redis_server.port, SGM_SERVICE_TOKEN=json.dumps(TOKENS), SGM_TEST_ROLE="gateway",
                     SGM_GATEWAY_SERVICES=json.dumps(services), SGM_WS_AUTH_RECHECK="0.5")
    setup = Federation(redis_server.port, service, beacon, gateway, rogue)
    # The gateway's log, read as it comes (a full stderr pipe would block its event loop).
    threading.Thread(target=lambda: setup.gateway_log.extend(gateway.proc.stderr or ()), daemon=True).start()
    httpx.get(f"http://127.0.0.1:{gateway.port}/__schema", timeout=10)  # starts it: it reads every service
    yield setup
    for server in (setup.gateway, setup.service, setup.beacon):
        server.stop()
    rogue.close()


def staff_session() -> str:
    """A staff user's session (in the test database, which the gateway shares for its users)."""
    from django.contrib.auth.models import User
    from django.test import Client

    user = User.objects.filter(username="staff").first() or User.objects.create_user("staff", is_staff=True)
    client = Client()
    client.force_login(user)
    return client.cookies["sessionid"].value


async def init(ws: Any, **payload: Any) -> None:
    await ws.send(json.dumps({"type": "connection_init", "payload": payload}))
    assert json.loads(await ws.recv())["type"] == "connection_ack"


async def subscribe(ws: Any, sub_id: str, entity: str, filters: Any = None, **more: Any) -> dict[str, Any]:
    await ws.send(json.dumps({"id": sub_id, "type": "subscribe",
                              "payload": {"entity": entity, "filters": filters, **more}}))
    answer: dict[str, Any] = json.loads(await asyncio.wait_for(ws.recv(), 10))
    assert answer["id"] == sub_id, answer
    return answer


async def frames(ws: Any, until: Any, timeout: float = 10) -> list[dict[str, Any]]:
    """Frames received until ``until(frames)`` holds."""
    out: list[dict[str, Any]] = []
    async with asyncio.timeout(timeout):
        while not until(out):
            out.append(json.loads(await ws.recv()))
    return out


def user_credentials() -> tuple[str, str]:
    """A user of the service (in the test database, which the gateway cannot see): session and token."""
    from django.contrib.auth.models import User
    from django.test import Client
    from rest_framework.authtoken.models import Token

    user = User.objects.create_user("alice", password="pw")
    client = Client()
    client.force_login(user)
    return client.cookies["sessionid"].value, Token.objects.create(user=user).key


def publish(port: int, channel: str, *events: dict[str, Any]) -> None:
    conn = redis.Redis(port=port)
    for event in events:
        conn.publish(channel, json.dumps(event))
    conn.close()


async def test_the_gateway_serves_both_services_with_their_filters_and_their_authority(
        federation: Federation) -> None:
    schema = federation.schema()
    assert schema["CameraEvents"]["service"] == "tests" and schema["Beacon"]["service"] == "beacon"
    assert schema["Beacon"]["available"] is True and schema["Secret"]["requires_auth"] is True
    session, token = await asyncio.to_thread(user_credentials)
    port = federation.redis_port

    async with federation.connect() as anonymous, federation.connect() as by_token, \
            federation.connect(Cookie=f"sessionid={session}") as by_cookie:
        await init(anonymous)
        await init(by_token, token=token)  # resolved by the gateway; the service gets an assertion of alice
        await init(by_cookie)
        assert (await subscribe(anonymous, "c", "CameraEvents", {"camera_id__in": [1, 2]}))["type"] == "subscribed"
        assert (await subscribe(anonymous, "b", "Beacon", {"n__gt": 1}, fields=["n"]))["type"] == "subscribed"
        assert (await subscribe(anonymous, "t", "TenantEvents"))["type"] == "subscribed"
        # The service's permission refuses an anonymous client; its declarations are checked here too.
        refused = await subscribe(anonymous, "s", "Secret")
        assert refused["type"] == "error" and refused["payload"][0]["code"] == "forbidden"
        bad = await subscribe(anonymous, "x", "Beacon", {"n__lt": 3})
        assert bad["payload"][0]["code"] == "invalid_filter" and "allowed: eq, gt" in bad["payload"][0]["message"]
        wrong_type = await subscribe(anonymous, "y", "Beacon", {"n": "3"})
        assert wrong_type["payload"][0]["code"] == "invalid_filter"
        assert (await subscribe(anonymous, "f", "Beacon", None, fields=["secret"]))["payload"][0]["code"] == \
            "invalid_fields"
        assert (await subscribe(anonymous, "u", "Nope"))["payload"][0]["code"] == "unknown_entity"
        # The same user, by the service's token or by its session cookie: allowed.
        assert (await subscribe(by_token, "s", "Secret"))["type"] == "subscribed"
        assert (await subscribe(by_cookie, "s", "Secret"))["type"] == "subscribed"

        await asyncio.to_thread(publish, port, "camera.events", *({"camera_id": n % 4, "n": n} for n in range(8)))
        await asyncio.to_thread(publish, port, "beacon.events", *({"n": n, "label": "x"} for n in range(4)))
        # TenantEvents: the service imposes tenant_id 1 for everyone; the client asked for no filter.
        await asyncio.to_thread(publish, port, "tenant.events", {"tenant_id": 2, "n": 0}, {"tenant_id": 1, "n": 1})
        await asyncio.to_thread(publish, port, "secret.events", {"n": 7})
        got = await frames(anonymous, lambda out: len(out) >= 7)
        by_id: dict[str, list[Any]] = {}
        for frame in got:
            assert frame["type"] == "next", frame
            by_id.setdefault(frame["id"], []).append(frame["payload"]["data"])
        assert [d["n"] for d in by_id["c"]] == [1, 2, 5, 6]
        assert by_id["b"] == [{"n": 2}, {"n": 3}]  # n > 1, and only the field asked for
        assert by_id["t"] == [{"tenant_id": 1, "n": 1}]
        for ws in (by_token, by_cookie):
            [secret] = await frames(ws, lambda out: len(out) >= 1)
            assert secret["id"] == "s" and secret["payload"]["data"] == {"n": 7}
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.3):
                await anonymous.recv()  # nothing else: no Secret, no tenant 2


async def test_a_stopped_service_is_unavailable_alone_and_comes_back_by_itself(federation: Federation) -> None:
    port = federation.redis_port
    async with federation.connect() as ws:
        await init(ws)
        assert (await subscribe(ws, "c1", "CameraEvents"))["type"] == "subscribed"
        assert (await subscribe(ws, "b1", "Beacon"))["type"] == "subscribed"
        federation.service.stop()
        down = await subscribe(ws, "c2", "CameraEvents")
        assert down["type"] == "error" and down["payload"][0]["code"] == "unavailable"
        assert "'tests'" in down["payload"][0]["message"]
        assert federation.schema()["CameraEvents"]["available"] is False
        assert federation.schema()["Beacon"]["available"] is True
        # The beacon's entities go on: an open subscription streams, a new one is granted.
        assert (await subscribe(ws, "b2", "Beacon", {"n": 5}))["type"] == "subscribed"
        await asyncio.to_thread(publish, port, "beacon.events", {"n": 5})
        got = await frames(ws, lambda out: len(out) >= 2)
        assert sorted(f["id"] for f in got) == ["b1", "b2"]

        federation.start_service()  # the same port; the gateway is not restarted
        deadline = time.monotonic() + 15
        attempt = 0
        while True:
            attempt += 1
            answer = await subscribe(ws, f"c-again-{attempt}", "CameraEvents", {"camera_id": 3})
            if answer["type"] == "subscribed":
                break
            assert answer["payload"][0]["code"] == "unavailable"
            assert time.monotonic() < deadline, "the service's entities did not come back"
            await asyncio.sleep(0.2)
        assert federation.schema()["CameraEvents"]["available"] is True
        await asyncio.to_thread(publish, port, "camera.events", {"camera_id": 3, "n": 1})
        got = await frames(ws, lambda out: any(f["id"] == f"c-again-{attempt}" for f in out))
        assert {f["id"] for f in got} == {"c1", f"c-again-{attempt}"}  # and the subscription kept while down


async def test_access_ends_at_the_gateway_when_the_service_says_so(federation: Federation) -> None:
    from django.contrib.sessions.models import Session

    session, _ = await asyncio.to_thread(user_credentials)
    async with federation.connect(Cookie=f"sessionid={session}") as ws:
        await init(ws)
        assert (await subscribe(ws, "s", "Secret"))["type"] == "subscribed"
        assert (await subscribe(ws, "c", "CameraEvents"))["type"] == "subscribed"
        await asyncio.to_thread(lambda: Session.objects.filter(session_key=session).delete())  # logout
        ended = await frames(ws, lambda out: any(f["type"] == "complete" for f in out))
        assert [(f["type"], f["id"]) for f in ended] == [("error", "s"), ("complete", "s")]
        assert ended[0]["payload"][0]["code"] == "forbidden"
        await asyncio.to_thread(publish, federation.redis_port, "camera.events", {"camera_id": 1})
        [kept] = await frames(ws, lambda out: len(out) >= 1)
        assert kept["id"] == "c"  # the public subscription stays


def test_a_service_announces_itself_when_it_starts(redis_server: RedisServer) -> None:
    conn = redis.Redis(port=redis_server.port)
    pubsub = conn.pubsub()
    pubsub.subscribe("supergraph_messaging.services")
    pubsub.get_message(timeout=1)
    service = Daphne(redis_server.port, SGM_SERVICE_TOKEN=TOKENS["tests"])
    try:
        message = None
        deadline = time.monotonic() + 10
        while message is None and time.monotonic() < deadline:
            message = pubsub.get_message(timeout=0.5)
        assert message is not None and json.loads(message["data"]) == {"service": "tests", "event": "started"}
    finally:
        service.stop()
        pubsub.close()
        conn.close()


async def test_what_a_service_describes_is_checked_before_it_is_served(caplog: pytest.LogCaptureFixture,
                                                                      redis_conn: Any) -> None:
    from supergraph_messaging.conf import ServiceEntry
    from supergraph_messaging.gateway.remote import Gateway, is_remote, remote_class
    from supergraph_messaging.realtime.subscriptions import get_subscription, registry

    for bad, problem in [({"entity": "X", "channels": []}, "X lists no channels"),
                         ({"entity": "X", "channels": ["x"], "filters": {"n": ["near"]}}, "filters this version"),
                         ({"entity": "X", "channels": ["x"] * 51}, "51 channels"),
                         ({"entity": "X", "channels": ["x"], "fields": ["f"] * 501}, "more than 500 fields"),
                         ({"channels": ["x"]}, "no entity"), (["X"], "not an object")]:
        with pytest.raises(ValueError, match=problem):
            remote_class("svc", bad)
    gateway = Gateway({"svc": ServiceEntry("http://127.0.0.1:1"), "other": ServiceEntry("http://127.0.0.1:2")})
    service = gateway.services["svc"]
    good = {"entity": "Remote1", "channels": ["r.1"], "filters": {"n": ["gt"]}, "field_types": {"n": ["an integer"]},
            "fields": ["n"], "requires_auth": True}
    try:
        await gateway._install(service, [good, {"entity": "CameraEvents", "channels": ["elsewhere"]}])
        remote = get_subscription("Remote1")
        assert remote is not None and is_remote(remote) and remote.requires_auth()
        assert remote.field_types == {"n": (int,)} and remote.fields == ["n"]
        local = get_subscription("CameraEvents")
        assert local is not None and not is_remote(local)  # a service cannot take over a local entity
        assert "entity CameraEvents is this project's own; refused" in caplog.text
        # Pinned: another service (unconfigured) can take neither the entity nor its exact channel.
        await gateway._install(gateway.services["other"], [good, {"entity": "Remote2", "channels": ["r.1"]}])
        assert gateway.services["other"].entities == {}
        assert "entity Remote1 belongs to service 'svc'" in caplog.text
        assert "channel 'r.1' of Remote2 belongs to service 'svc'" in caplog.text
        await gateway._install(service, [])  # the service dropped it
        assert get_subscription("Remote1") is None
    finally:
        registry[:] = [c for c in registry if not is_remote(c)]


async def test_resume_with_since_works_through_the_gateway(federation: Federation) -> None:
    """The gateway reads the service's streams (same Redis): a client back with its position misses nothing."""
    from django.conf import settings
    from django.test import override_settings

    from supergraph_messaging import aredis_publish

    with override_settings(SUPERGRAPH_MESSAGING={**settings.SUPERGRAPH_MESSAGING, "DELIVERY": "durable"}):
        async with federation.connect() as ws:
            await init(ws)
            assert (await subscribe(ws, "c", "CameraEvents", {"camera_id": 5}))["type"] == "subscribed"
            await aredis_publish("camera.events", {"camera_id": 5, "n": 1})
            [first] = await frames(ws, lambda out: len(out) >= 1)
            position = {"offset": first["payload"]["offset"], "epoch": first["payload"]["epoch"]}
        for n in (2, 3):  # while the client is away
            await aredis_publish("camera.events", {"camera_id": 5, "n": n})
        await aredis_publish("camera.events", {"camera_id": 6, "n": 99})
        async with federation.connect() as ws:
            await init(ws)
            answer = await subscribe(ws, "c", "CameraEvents", {"camera_id": 5}, since={"camera.events": position})
            assert answer["type"] == "subscribed" and answer["payload"]["recovered"] is True
            replayed = await frames(ws, lambda out: len(out) >= 2)
            assert [f["payload"]["data"]["n"] for f in replayed] == [2, 3]


WAITING_CLIENT = """
window.events = []; window.errors = []; window.subscribed = 0;
const client = new SubscriptionClient("%s", {minDelay: 100, maxDelay: 400});
client.subscribe("CameraEvents", {filters: {camera_id: 1}}, (data) => window.events.push(data.n),
                 {onSubscribed: () => { window.subscribed += 1; },
                  onError: (errors, retrying) => window.errors.push([errors[0].code, retrying])});
"""


@pytest.mark.browser
def test_client_js_through_the_gateway_waits_out_a_stopped_service(
        federation: Federation, browser_page: Any) -> None:  # noqa: F811 - the fixture
    """A browser subscribing while the service is down is subscribed by itself once the service is back."""
    page = browser_page
    federation.service.stop()
    try:
        page.goto(f"http://127.0.0.1:{federation.gateway.port}/__schema")  # a page of the gateway's origin
        page.add_script_tag(content=CLIENT_JS.read_text() + WAITING_CLIENT % (
            f"ws://127.0.0.1:{federation.gateway.port}/subscribe"), type="module")
        # A module script may run after add_script_tag returns: until then window.errors is undefined.
        wait_for(lambda: page.evaluate("(window.errors || []).length") >= 2, "the refusals while the service is down")
        assert {tuple(e) for e in page.evaluate("window.errors")} == {("unavailable", True)}
        federation.start_service()
        wait_for(lambda: page.evaluate("window.subscribed") == 1, "the subscription, with no step of ours")
    finally:
        if federation.service.proc.poll() is not None:
            federation.start_service()
    publish(federation.redis_port, "camera.events", {"camera_id": 2, "n": 0}, {"camera_id": 1, "n": 1})
    wait_for(lambda: page.evaluate("window.events") == [1], "the event")


def test_the_gateway_asyncapi_lists_the_federated_subscriptions_and_validates(
        federation: Federation, node: str) -> None:  # noqa: F811 - the fixture
    from tests.gateway.test_asyncapi import parse

    result = parse(node, federation.schema("/__asyncapi"))
    assert result["errors"] == [] and result["warnings"] == [], result
    entities = set(federation.schema())
    assert {"Beacon", "CameraEvents", "Secret"} <= entities
    assert {f"subscribe.{e}" for e in entities} | {f"next.{e}" for e in entities} <= set(result["operations"])
