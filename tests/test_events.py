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
