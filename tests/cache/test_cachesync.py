from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from django.db import transaction

from supergraph_messaging import CacheSync
from tests.testapp.models import Camera, CameraModel

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def sync() -> Iterator[CacheSync]:
    s = CacheSync(Camera, key="camera:mac:{mac_address}", fields=["id", "mac_address", "model", "settings"],
                  ttl=120)
    yield s
    s.disconnect()


def test_save_writes_after_commit_exactly_listed_fields(redis_conn: Any, sync: CacheSync) -> None:
    model = CameraModel.objects.create(name="Hikvision")
    with transaction.atomic():
        cam = Camera.objects.create(mac_address="AA", model=model, settings={"fps": 25}, secret="s3")
        assert redis_conn.get("camera:mac:AA") is None  # not before the commit
    assert json.loads(redis_conn.get("camera:mac:AA")) == {
        "id": cam.pk, "mac_address": "AA", "model": model.pk, "settings": {"fps": 25}
    }
    assert 110 <= redis_conn.ttl("camera:mac:AA") <= 120


def test_rollback_writes_nothing(redis_conn: Any, sync: CacheSync) -> None:
    with pytest.raises(RuntimeError), transaction.atomic():
        Camera.objects.create(mac_address="RB")
        raise RuntimeError("rollback")
    assert redis_conn.get("camera:mac:RB") is None
    assert not Camera.objects.filter(mac_address="RB").exists()


def test_update_and_delete(redis_conn: Any, sync: CacheSync) -> None:
    cam = Camera.objects.create(mac_address="AA")
    cam.settings = {"fps": 30}
    cam.save()
    assert json.loads(redis_conn.get("camera:mac:AA"))["settings"] == {"fps": 30}
    cam.mac_address = "BB"
    cam.save()
    assert redis_conn.get("camera:mac:AA") is None  # the old key went
    assert json.loads(redis_conn.get("camera:mac:BB"))["mac_address"] == "BB"
    cam.delete()
    assert redis_conn.get("camera:mac:BB") is None


def test_delete_rolled_back_keeps_entry(redis_conn: Any, sync: CacheSync) -> None:
    cam = Camera.objects.create(mac_address="KEEP")
    with pytest.raises(RuntimeError), transaction.atomic():
        cam.delete()
        raise RuntimeError("rollback")
    assert redis_conn.get("camera:mac:KEEP") is not None


def test_callable_fields_and_bad_key() -> None:
    s = CacheSync(Camera, key="c:{mac_address}", fields={"mac": "mac_address",
                                                         "model": lambda c: c.model.name if c.model else None})
    try:
        assert s.data(Camera(mac_address="X")) == {"mac": "X", "model": None}
    finally:
        s.disconnect()
    with pytest.raises(TypeError, match="'nope' is not a field"):
        CacheSync(Camera, key="c:{nope}", fields=["id"])


def test_write_failed_during_an_outage_leaves_no_stale_key(redis_server: Any, redis_conn: Any,
                                                           sync: CacheSync) -> None:
    """Redis frozen (SIGSTOP) while a change commits; once it is back, the old value is gone."""
    import signal
    import time

    from django.test import override_settings

    cam = Camera.objects.create(mac_address="OUT", name="before")
    assert json.loads(redis_conn.get("camera:mac:OUT"))["mac_address"] == "OUT"
    redis_conn.set("camera:mac:OUT", json.dumps({"name": "before"}))
    with override_settings(SUPERGRAPH_MESSAGING={"BREAKER_INTERVAL": 0.2}):
        assert redis_server.process is not None
        redis_server.process.send_signal(signal.SIGSTOP)
        try:
            cam.name = "after"
            cam.save()  # the CacheSync write times out
        finally:
            redis_server.process.send_signal(signal.SIGCONT)
        deadline = time.monotonic() + 5
        while redis_conn.exists("camera:mac:OUT") and time.monotonic() < deadline:
            time.sleep(0.02)
    assert not redis_conn.exists("camera:mac:OUT"), "the pre-outage value survived the outage"


def test_registering_again_replaces_the_earlier_cachesync(redis_conn: Any) -> None:
    from supergraph_messaging.cache.invalidation import templates

    first = CacheSync(Camera, key="camera:twice:{mac_address}", fields=["id"])
    second = CacheSync(Camera, key="camera:twice:{mac_address}", fields=["mac_address"])
    try:
        Camera.objects.create(mac_address="TW")
        assert json.loads(redis_conn.get("camera:twice:TW")) == {"mac_address": "TW"}
        assert sum(r.template.template == "camera:twice:{mac_address}" for r in templates) == 1
    finally:
        second.disconnect()
        first.disconnect()


@pytest.mark.parametrize("mode", ["pubsub", "durable"])
def test_the_invalidation_of_a_change_keeps_what_its_cachesync_wrote(redis_conn: Any, sync: CacheSync,
                                                                     mode: str) -> None:
    """An update through the API: CacheSync writes the new row, the event for the same save goes out, and
    its invalidate_on handler (camera:mac:{mac_address}, tests/testapp/caching.py) must leave that write in
    place (it used to delete it: the next reader then missed and fell back to the producing service).
    An event of another change still deletes."""
    import asyncio

    from django.test import override_settings
    from rest_framework.test import APIClient

    from supergraph_messaging.cache.invalidation import invalidate_for_event
    from supergraph_messaging.delivery.outbox import relay_all
    from supergraph_messaging.events import flush_events
    from tests.conftest import EventCollector

    settings = {"DELIVERY": mode, "SERVICE_NAME": "tests"}
    cam = Camera.objects.create(mac_address="AA", settings={"fps": 1})
    with override_settings(SUPERGRAPH_MESSAGING=settings), EventCollector("camera.updated") as events:
        r = APIClient().patch(f"/cameras/{cam.pk}/", {"settings": {"fps": 30}}, format="json")
        assert r.status_code == 200, r.content
        flush_events()
        if mode == "durable":
            relay_all()
        [(_channel, event)] = events.settle(0.3)
        stamp = redis_conn.get("camera:mac:AA~ver")
        assert stamp is not None and stamp.decode() == event["_meta"]["event_id"]
        deleted = asyncio.run(invalidate_for_event("camera.updated", event))
        kept = redis_conn.get("camera:mac:AA")
        other = {**event, "_meta": {**event["_meta"], "event_id": "another-change"}}
        deleted_by_other = asyncio.run(invalidate_for_event("camera.updated", other))
    assert deleted == 0 and kept is not None and json.loads(kept)["settings"] == {"fps": 30}
    assert deleted_by_other == 1 and redis_conn.get("camera:mac:AA") is None
    assert redis_conn.get("camera:mac:AA~ver") is None
