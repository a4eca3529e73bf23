from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from rest_framework.test import APIClient

from supergraph_messaging import EventConfig, MessagingError, register_model_events
from supergraph_messaging.events.model_signals import ModelEvents
from tests.conftest import EventCollector
from tests.testapp.models import Camera, CameraModel
from tests.testapp.views import CAMERA_EVENTS

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("delivery", "topology")]


@pytest.fixture
def model_events() -> Iterator[ModelEvents]:
    handler = register_model_events(Camera, CAMERA_EVENTS)
    yield handler
    handler.disconnect()


@pytest.fixture
def events(redis_conn: Any) -> Iterator[EventCollector]:
    with EventCollector("camera.created", "camera.updated", "camera.deleted", "camera.settings.updated") as c:
        yield c


def test_orm_save_publishes_model_fields(model_events: ModelEvents, events: EventCollector) -> None:
    model = CameraModel.objects.create(name="Hik")
    cam = Camera.objects.create(mac_address="AA", model=model, settings={"x": 1})
    cam.mac_address = "BB"
    cam.save()
    cam.delete()
    got = events.wait(3)
    assert [c for c, _ in events.settle()] == ["camera.created", "camera.updated", "camera.deleted"]
    assert {k: v for k, v in got[0][1].items() if k != "_meta"} == {
        "id": got[0][1]["id"], "mac_address": "AA", "model": model.pk, "settings": {"x": 1}}
    assert got[1][1]["_meta"]["previous"] == {"mac_address": "AA"}
    assert got[1][1]["_meta"]["entity"] == "testapp.Camera"


def test_viewset_with_same_config_publishes_once(model_events: ModelEvents, events: EventCollector) -> None:
    api = APIClient()
    r = api.post("/cameras/", {"mac_address": "ONE"}, format="json")
    pk = r.json()["id"]
    api.patch(f"/cameras/{pk}/", {"name": "x"}, format="json")
    api.patch(f"/cameras/{pk}/settings/", {"settings": {"a": 1}}, format="json")
    api.delete(f"/cameras/{pk}/")
    events.wait(4)
    assert [c for c, _ in events.settle(0.5)] == [
        "camera.created", "camera.updated", "camera.settings.updated", "camera.deleted"]


def test_bulk_operations_send_no_signals_and_publish_nothing(model_events: ModelEvents,
                                                             events: EventCollector) -> None:
    Camera.objects.bulk_create([Camera(mac_address="B1"), Camera(mac_address="B2")])
    Camera.objects.update(name="renamed")
    assert events.settle(0.4) == []
    Camera.objects.filter(mac_address="B1").delete()  # QuerySet.delete does send post_delete
    assert [c for c, _ in events.wait(1)] == ["camera.deleted"]


def test_payload_fields_required() -> None:
    with pytest.raises(MessagingError, match="payload_fields is required"):
        register_model_events(Camera, EventConfig(publish={"create": "x"}))


def test_registering_again_replaces_instead_of_piling_up(model_events: ModelEvents) -> None:
    from supergraph_messaging.events.config import registry

    count = len(registry)
    for _ in range(3):
        register_model_events(Camera, CAMERA_EVENTS)
    assert len(registry) == count


@pytest.mark.topology("single")  # it stops, freezes or restarts the session's Redis
def test_unconfirmed_events_are_bounded_dropped_and_counted_without_blocking(own_redis: Any, caplog: Any) -> None:
    """Redis frozen: nothing confirms the events sent, the bound fills, and publishing still never waits."""
    import signal
    import time

    from django.test import override_settings

    from supergraph_messaging.delivery.pipelined import counters, publisher
    from supergraph_messaging.signals import event_published

    confirmed: list[Any] = []

    def receiver(sender: Any, channel: str, payload: dict[str, Any], **kw: Any) -> None:
        if channel == "frozen.events":
            confirmed.append(payload["n"])

    before = dict(counters)
    settings = {"REDIS_URL": own_redis.url, "SOCKET_TIMEOUT": 2.0, "PUBLISH_QUEUE_SIZE": 5}
    event_published.connect(receiver)
    with override_settings(SUPERGRAPH_MESSAGING=settings):
        publisher.publish("frozen.events", {"n": -1})  # connected before the freeze
        assert publisher.flush(5)
        own_redis.process.send_signal(signal.SIGSTOP)
        try:
            worst = 0.0
            for i in range(50):
                t0 = time.perf_counter()
                publisher.publish("frozen.events", {"n": i, "_meta": {"event_id": f"e{i}"}})
                worst = max(worst, time.perf_counter() - t0)
        finally:
            own_redis.process.send_signal(signal.SIGCONT)
        assert publisher.flush(10)
    event_published.disconnect(receiver)
    dropped = counters["dropped"] - before["dropped"]
    print(f"\n50 events, at most 5 unconfirmed, Redis frozen: {dropped} dropped, slowest publish {worst * 1000:.2f} ms")
    assert dropped == 45 and confirmed == [-1, 0, 1, 2, 3, 4]
    assert worst < 0.5  # never the 2 s socket timeout
    assert "Dropped event e49 on 'frozen.events'" in caplog.text


@pytest.mark.topology("single")  # it stops, freezes or restarts the session's Redis
def test_first_event_after_a_redis_restart_is_published(own_redis: Any) -> None:
    from django.test import override_settings

    from supergraph_messaging.delivery.pipelined import counters, publisher

    with override_settings(SUPERGRAPH_MESSAGING={"REDIS_URL": own_redis.url}):
        conn = own_redis.client()
        for round_ in range(3):
            pubsub = conn.pubsub()
            pubsub.subscribe("restart.events")
            assert pubsub.get_message(timeout=2)["type"] == "subscribe"
            published = counters["published"]
            publisher.publish("restart.events", {"round": round_})
            assert publisher.flush(5)
            assert counters["published"] - published == 1
            message = pubsub.get_message(timeout=2)
            assert message is not None and message["data"] == b'{"round":%d}' % round_
            pubsub.close()
            own_redis.restart()


def test_packed_publishes_reach_prefixed_non_ascii_and_over_a_thousand_channels(redis_conn: Any) -> None:
    """The publisher writes packed PUBLISH commands straight to its socket: every event must arrive
    whole, in order, on its own prefixed channel, whatever the channel's name and however many there are."""
    from django.conf import settings
    from django.test import override_settings

    from supergraph_messaging.delivery.pipelined import publisher

    with override_settings(SUPERGRAPH_MESSAGING={**settings.SUPERGRAPH_MESSAGING, "CHANNEL_PREFIX": "svc:"}):
        pubsub = redis_conn.pubsub()
        pubsub.psubscribe("svc:*")
        assert pubsub.get_message(timeout=2)["type"] == "psubscribe"
        names = ["caméra.updated", *(f"tenant.{n}.changed" for n in range(1100)), "caméra.updated", "x"]
        for i, name in enumerate(names):
            publisher.publish(name, {"i": i, "text": "é" * (i % 3)})
        assert publisher.flush(5)
        got = []
        while len(got) < len(names) and (message := pubsub.get_message(timeout=2)) is not None:
            got.append((message["channel"].decode(), json.loads(message["data"])))
        pubsub.close()
    assert got == [(f"svc:{name}", {"i": i, "text": "é" * (i % 3)}) for i, name in enumerate(names)]


@pytest.mark.topology("single")  # it kills the session Redis's clients
def test_publishing_after_client_kill_loses_no_event_and_no_wake_up_call(own_redis: Any) -> None:
    """The server closed the publishing connection (CLIENT KILL, as at a restart): the poll for a close
    before each send sees it, and the event or wake-up call goes out on a new connection. (Before that
    poll, wake-up calls read nothing first and the first one after each close was lost: 3 of 9.)"""
    from django.test import override_settings

    from supergraph_messaging.delivery.pipelined import counters, publisher
    from supergraph_messaging.redis.client import get_redis_client

    with override_settings(SUPERGRAPH_MESSAGING={"REDIS_URL": own_redis.url}):
        conn = own_redis.client()
        pubsub = conn.pubsub()
        pubsub.subscribe("killed.events", "killed.raw")
        for _ in range(2):
            assert pubsub.get_message(timeout=2)["type"] == "subscribe"
        lost_events, lost_raw = 0, 0
        for round_ in range(3):
            publisher.publish("killed.events", {"round": round_, "n": -1})
            publisher.publish_raw("killed.raw", b"-1")
            assert publisher.flush(5)
            while pubsub.get_message(timeout=0.2) is not None:
                pass
            assert conn.client_kill_filter(_type="normal", skipme=True) >= 1
            published = counters["published"]
            for n in range(3):  # first: nothing has read the connection since the kill
                publisher.publish_raw("killed.raw", b"%d" % n)
            for n in range(10):
                publisher.publish("killed.events", {"round": round_, "n": n})
            publisher.flush(5)
            received: dict[str, list[Any]] = {"killed.events": [], "killed.raw": []}
            while (message := pubsub.get_message(timeout=0.5)) is not None:
                received[message["channel"].decode()].append(message["data"])
            events = [json.loads(data)["n"] for data in received["killed.events"]]
            lost_events += 10 - len(events)
            lost_raw += 3 - len(received["killed.raw"])
            assert events == list(range(10)) and counters["published"] - published == 10
            assert received["killed.raw"] == [b"0", b"1", b"2"]
        assert not get_redis_client().breaker.failing
        pubsub.close()
    print(f"\n3 rounds of CLIENT KILL: {lost_events} of 30 events lost, {lost_raw} of 9 wake-up calls lost")


@pytest.fixture
def tls_redis(tmp_path: Any) -> Iterator[tuple[Any, str]]:
    """A redis-server with a TLS port besides its plain one (a self-signed certificate made here)."""
    import subprocess

    from tests.support.redis_server import RedisServer, free_port

    cert, key = tmp_path / "redis.crt", tmp_path / "redis.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj",
                    "/CN=127.0.0.1", "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    tls_port = free_port()
    server = RedisServer(extra_args=("--tls-port", str(tls_port), "--tls-cert-file", str(cert),
                                     "--tls-key-file", str(key), "--tls-auth-clients", "no"))
    server.start()
    yield server, f"rediss://127.0.0.1:{tls_port}/0?ssl_cert_reqs=none"
    server.close()


@pytest.mark.topology("single")  # a server of its own, with a TLS port
def test_events_over_tls_go_through_redis_py_and_survive_client_kill(tls_redis: tuple[Any, str]) -> None:
    """A TLS socket encrypts in user space, so the publisher keeps redis-py's reads and writes for it;
    they see a closed connection before the next event as the raw socket does."""
    from django.test import override_settings

    from supergraph_messaging.delivery.pipelined import counters, publisher

    server, url = tls_redis
    with override_settings(SUPERGRAPH_MESSAGING={"REDIS_URL": url}):
        conn = server.client()
        pubsub = conn.pubsub()
        pubsub.subscribe("tls.events")
        assert pubsub.get_message(timeout=2)["type"] == "subscribe"
        received: list[int] = []
        published = counters["published"]
        for round_ in range(3):
            for n in range(10):
                publisher.publish("tls.events", {"n": round_ * 10 + n})
            assert publisher.flush(5)
            while (message := pubsub.get_message(timeout=0.3)) is not None:
                received.append(json.loads(message["data"])["n"])
            assert conn.client_kill_filter(_type="normal", skipme=True) >= 1
        pubsub.close()
    assert received == list(range(30)) and counters["published"] - published == 30
    assert any(type(line.conn).__name__ == "SSLConnection" and line.wire is None for line in publisher._lines)


@pytest.mark.topology("single")  # it stops, freezes or restarts the session's Redis
def test_event_publishing_goes_through_the_breaker(own_redis: Any, caplog: Any) -> None:
    from django.test import override_settings

    from supergraph_messaging.delivery.pipelined import counters
    from supergraph_messaging.events.publishing import publish_now
    from supergraph_messaging.redis.client import get_redis_client

    with override_settings(SUPERGRAPH_MESSAGING={"REDIS_URL": own_redis.url, "BREAKER_INTERVAL": 60}):
        own_redis.stop()
        failed = counters["failed"]
        for i in range(20):
            assert publish_now("down.events", {"n": i}) is None
        assert counters["failed"] - failed == 20
        breaker = get_redis_client().breaker
        assert breaker.failing and breaker.failures == 1  # one attempt; the other 19 skipped Redis
