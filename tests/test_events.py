from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from rest_framework.test import APIClient

from supergraph_messaging import EventConfig, MessagingError, register_model_events
from supergraph_messaging.events import ModelEvents
from tests.conftest import EventCollector
from tests.testapp.models import Camera, CameraModel
from tests.testapp.views import CAMERA_EVENTS

pytestmark = pytest.mark.django_db(transaction=True)


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
    from supergraph_messaging.events import registry

    count = len(registry)
    for _ in range(3):
        register_model_events(Camera, CAMERA_EVENTS)
    assert len(registry) == count


def test_background_queue_full_drops_and_counts_without_blocking(own_redis: Any, caplog: Any) -> None:
    """Redis frozen: the publisher thread is stuck, its queue fills, and submit() still never waits."""
    import signal
    import time

    from django.test import override_settings

    from supergraph_messaging.events import BackgroundPublisher, counters

    publisher = BackgroundPublisher(maxsize=5)
    before = counters["dropped"]
    with override_settings(SUPERGRAPH_MESSAGING={"REDIS_URL": own_redis.url, "SOCKET_TIMEOUT": 2.0}):
        own_redis.process.send_signal(signal.SIGSTOP)
        try:
            worst = 0.0
            for i in range(50):
                t0 = time.perf_counter()
                publisher.submit("frozen.events", {"n": i, "_meta": {"event_id": f"e{i}"}})
                worst = max(worst, time.perf_counter() - t0)
        finally:
            own_redis.process.send_signal(signal.SIGCONT)
        publisher.flush(10)
    dropped = counters["dropped"] - before
    print(f"\n50 events into a queue of 5 with Redis frozen: {dropped} dropped, slowest submit {worst * 1000:.2f} ms")
    assert dropped >= 40
    assert worst < 0.5  # never the 2 s socket timeout of the stuck publisher
    assert "Dropped event e49 on 'frozen.events'" in caplog.text


def test_event_publishing_goes_through_the_breaker(own_redis: Any, caplog: Any) -> None:
    from django.test import override_settings

    from supergraph_messaging.connection import get_redis_client
    from supergraph_messaging.events import counters, publish_now

    with override_settings(SUPERGRAPH_MESSAGING={"REDIS_URL": own_redis.url, "BREAKER_INTERVAL": 60}):
        own_redis.stop()
        failed = counters["failed"]
        for i in range(20):
            assert publish_now("down.events", {"n": i}) is None
        assert counters["failed"] - failed == 20
        breaker = get_redis_client().breaker
        assert breaker.failing and breaker.failures == 1  # one attempt; the other 19 skipped Redis
