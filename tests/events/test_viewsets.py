from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from django.db import connection
from django.test import override_settings
from rest_framework.test import APIClient

from supergraph_messaging.delivery.pipelined import counters
from supergraph_messaging.events import flush_events
from tests.conftest import EventCollector, wait_for
from tests.support.redis_server import RedisServer
from tests.testapp.models import Camera, CameraModel

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("delivery")]

CHANNELS = ("camera.created", "camera.updated", "camera.deleted", "camera.settings.updated")
PAYLOAD = {"id", "mac_address", "model", "settings", "_meta"}


@pytest.fixture
def api() -> APIClient:
    return APIClient()


@pytest.fixture
def events(redis_conn: Any) -> Iterator[EventCollector]:
    with EventCollector(*CHANNELS, "allcam.created", "allcam.updated", "seed.created") as collector:
        yield collector


def test_each_write_publishes_exactly_one_event(api: APIClient, events: EventCollector) -> None:
    model = CameraModel.objects.create(name="Hik")
    r = api.post("/cameras/", {"mac_address": "AA", "name": "gate", "model": model.pk, "settings": {"fps": 1}},
                 format="json")
    assert r.status_code == 201
    pk = r.json()["id"]
    assert api.put(f"/cameras/{pk}/", {"mac_address": "AA", "name": "gate2", "settings": {"fps": 2}},
                   format="json").status_code == 200
    assert api.patch(f"/cameras/{pk}/", {"settings": {"fps": 3}}, format="json").status_code == 200
    assert api.delete(f"/cameras/{pk}/").status_code == 204
    got = events.wait(4)
    assert [c for c, _ in events.settle()] == ["camera.created", "camera.updated", "camera.updated", "camera.deleted"]
    for (channel, payload), action in zip(got, ["create", "update", "update", "delete"], strict=True):
        assert set(payload) == PAYLOAD
        meta = payload["_meta"]
        assert meta["event"] == channel and meta["action"] == action and meta["entity"] == "testapp.Camera"
        uuid.UUID(meta["event_id"])
        assert meta["ts"].endswith("Z")
        assert ("previous" in meta) == (action == "update")
    assert got[0][1]["model"] == model.pk and got[0][1]["settings"] == {"fps": 1}
    assert got[3][1]["id"] == pk and got[3][1]["settings"] == {"fps": 3}  # captured before deletion
    assert got[2][1]["_meta"]["previous"] == {"settings": {"fps": 2}}


def test_unexposed_field_never_in_payload(api: APIClient, events: EventCollector) -> None:
    r = api.post("/allcams/", {"mac_address": "S1"}, format="json")
    assert r.status_code == 201
    api.patch(f"/allcams/{r.json()['id']}/", {"name": "n"}, format="json")
    r2 = api.post("/cameras/", {"mac_address": "S2"}, format="json")
    assert r2.status_code == 201
    messages = events.wait(3)
    assert Camera.objects.get(mac_address="S1").secret == "hidden"
    for _channel, payload in messages:
        assert "secret" not in payload
    assert set(messages[0][1]) == {"id", "mac_address", "name", "model", "settings", "complex_id", "_meta"}


def test_changed_mac_carries_previous(api: APIClient, events: EventCollector) -> None:
    cam = Camera.objects.create(mac_address="OLD", settings={"a": 1})
    assert api.patch(f"/cameras/{cam.pk}/", {"mac_address": "NEW"}, format="json").status_code == 200
    (_, payload), = events.wait(1)
    assert payload["mac_address"] == "NEW"
    assert payload["_meta"]["previous"] == {"mac_address": "OLD"}


def test_failure_after_save_publishes_nothing(api: APIClient, events: EventCollector) -> None:
    with pytest.raises(RuntimeError):
        api.post("/failing/", {"mac_address": "RB1"}, format="json")
    assert not Camera.objects.filter(mac_address="RB1").exists()
    assert events.settle(0.3) == []


def test_atomic_requests_rollback_publishes_nothing(api: APIClient, events: EventCollector) -> None:
    connection.settings_dict["ATOMIC_REQUESTS"] = True
    try:
        with pytest.raises(RuntimeError):
            api.post("/raising/", {"mac_address": "RB2"}, format="json")
        assert not Camera.objects.filter(mac_address="RB2").exists()
        assert api.post("/cameras/", {"mac_address": "OK2"}, format="json").status_code == 201
    finally:
        connection.settings_dict["ATOMIC_REQUESTS"] = False
    messages = events.wait(1)
    assert [p["mac_address"] for _, p in events.settle()] == ["OK2"]
    assert messages[0][0] == "camera.created"


def test_subscriber_reads_the_committed_row(api: APIClient, events: EventCollector) -> None:
    from django.db import connections

    def read_row(data: Any, channel: str) -> bool:
        try:
            return Camera.objects.filter(pk=data["id"]).exists()  # another thread: another connection
        finally:
            connections.close_all()

    events.on_message = read_row
    for i in range(5):
        assert api.post("/cameras/", {"mac_address": f"C{i}"}, format="json").status_code == 201
    events.wait(5)
    wait = 0
    while len(events.handled) < 5 and wait < 50:
        import time

        time.sleep(0.05)
        wait += 1
    assert events.handled == [True] * 5


def test_redis_down_api_still_answers(api: APIClient, own_redis: RedisServer,
                                      caplog: pytest.LogCaptureFixture) -> None:
    with override_settings(SUPERGRAPH_MESSAGING={"REDIS_URL": own_redis.url}):
        own_redis.stop()
        before = counters["failed"]
        with caplog.at_level(logging.ERROR, "supergraph_messaging"):
            r = api.post("/cameras/", {"mac_address": "DOWN"}, format="json")
            assert r.status_code == 201
            assert flush_events()
        assert counters["failed"] == before + 1
        errors = [rec for rec in caplog.records if rec.levelno >= logging.ERROR]
        assert len(errors) == 1 and "camera.created" in errors[0].getMessage()


def test_custom_action_publishes_after_2xx_only(api: APIClient, events: EventCollector) -> None:
    cam = Camera.objects.create(mac_address="ACT", settings={"fps": 1})
    assert api.patch(f"/cameras/{cam.pk}/settings/", {"settings": "nope"}, format="json").status_code == 400
    assert api.patch(f"/cameras/{cam.pk}/settings/", {"settings": {"fps": 9}}, format="json").status_code == 200
    assert api.patch("/cameras/999999/settings/", {"settings": {"fps": 9}}, format="json").status_code == 404
    messages = events.settle(0.4)
    assert [c for c, _ in messages] == ["camera.settings.updated"]
    payload = messages[0][1]
    assert payload["settings"] == {"fps": 9}
    assert payload["_meta"]["action"] == "update_settings"
    assert payload["_meta"]["previous"] == {"settings": {"fps": 1}}


@pytest.fixture
def failing_outbox() -> Iterator[None]:
    """The outbox insert fails in the database (a trigger), as a full disk or a lost connection would."""
    with connection.cursor() as cursor:
        cursor.execute("CREATE TRIGGER sgm_fail BEFORE INSERT ON supergraph_messaging_outboxevent "
                       "BEGIN SELECT RAISE(ABORT, 'outbox unavailable'); END")
    yield
    with connection.cursor() as cursor:
        cursor.execute("DROP TRIGGER sgm_fail")


@pytest.mark.delivery("durable")
def test_durable_change_and_event_commit_together_or_not_at_all(failing_outbox: None, events: EventCollector) -> None:
    """A change whose outbox row cannot be written is not committed (a perform_* hook and a custom action):
    otherwise the change would stand and its event be lost."""
    api = APIClient(raise_request_exception=False)
    cam = Camera.objects.create(mac_address="TX", settings={"fps": 1})
    assert api.patch(f"/cameras/{cam.pk}/settings/", {"settings": {"fps": 9}}, format="json").status_code == 500
    r = api.patch(f"/cameras/{cam.pk}/", {"name": "renamed"}, format="json")
    assert r.status_code == 500, (r.content, Camera.objects.filter(pk=cam.pk).exists())
    cam.refresh_from_db()
    assert (cam.settings, cam.name) == ({"fps": 1}, "")
    assert events.settle(0.3) == []


def test_seed_style_model_only_viewset(api: APIClient, events: EventCollector) -> None:
    r = api.post("/seed/", {"mac_address": "SEED"}, format="json")
    assert r.status_code == 201
    (channel, payload), = events.wait(1)
    assert channel == "seed.created" and payload["mac_address"] == "SEED"


def test_checks_name_the_viewset() -> None:
    from rest_framework import serializers

    from supergraph_messaging import EventConfig, ModelViewSet
    from tests.testapp.serializers import CameraSerializer

    class Bad(ModelViewSet):
        queryset = Camera.objects.all()
        serializer_class = CameraSerializer
        events = EventConfig(publish={"create": "x", "archive": "y"}, payload_fields=["id", "secret"])

    from supergraph_messaging.events import config

    config.registry[:] = [r for r in config.registry if r.viewset is not Bad]
    errors = Bad.check_events()
    assert [e.id for e in errors] == ["supergraph_messaging.E101", "supergraph_messaging.E102"]
    assert "Bad" in errors[0].msg and "'archive'" in errors[0].msg
    assert "'secret'" in errors[1].msg and "CameraSerializer" in errors[1].msg
    assert serializers  # imported for the side effect of DRF being importable


def test_eventconfig_validates() -> None:
    from supergraph_messaging import EventConfig

    with pytest.raises(TypeError):
        EventConfig(publish={})
    with pytest.raises(TypeError):
        EventConfig(publish={"create": "x"}, payload_fields="id")  # type: ignore[arg-type]


@pytest.mark.delivery("pubsub")  # the setting of the pub/sub path
def test_foreground_publishing_setting(api: APIClient, events: EventCollector) -> None:
    with override_settings(SUPERGRAPH_MESSAGING={"PUBLISH_IN_BACKGROUND": False}):
        assert api.post("/cameras/", {"mac_address": "FG"}, format="json").status_code == 201
    assert [p["mac_address"] for _, p in events.wait(1)] == ["FG"]


def test_event_published_signal(api: APIClient, events: EventCollector) -> None:
    from supergraph_messaging.events import flush_events
    from supergraph_messaging.signals import event_published

    seen: list[tuple[str, int]] = []

    def receiver(sender: Any, channel: str, payload: dict[str, Any], receivers: int, **kw: Any) -> None:
        seen.append((channel, receivers))

    event_published.connect(receiver)
    try:
        assert api.post("/cameras/", {"mac_address": "SIG"}, format="json").status_code == 201
        assert flush_events()
        wait_for(lambda: seen)  # durable: sent by whichever relay took the row, this one or the test's
    finally:
        event_published.disconnect(receiver)
    assert seen == [("camera.created", 1)]  # the collector is the one receiver
