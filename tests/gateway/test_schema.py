from __future__ import annotations

import pytest
from django.test import Client

pytestmark = pytest.mark.django_db


def test_schema_lists_subscriptions_events_and_caches() -> None:
    from django.contrib.auth.models import User

    from tests.testapp import caching  # noqa: F401 - registers its templates

    client = Client()
    client.force_login(User.objects.create_user("staff", password="pw", is_staff=True))
    r = client.get("/__schema")
    assert r.status_code == 200 and r["Content-Type"] == "application/json"
    doc = r.json()
    subs = {s["entity"]: s for s in doc["subscriptions"]}
    assert subs["CameraEvents"]["channels"] == ["camera.events"]
    assert subs["CameraEvents"]["filters"]["complex_id"] == ["eq", "in"]
    assert subs["CameraEvents"]["requires_auth"] is False
    assert subs["Secret"]["requires_auth"] is True
    events = {(e["channel"], e["action"]) : e for e in doc["events"]}
    created = events[("camera.created", "create")]
    assert created["entity"] == "testapp.Camera"
    assert created["payload_fields"] == ["id", "mac_address", "model", "settings"]
    assert ("camera.settings.updated", "update_settings") in events
    # Other tests register the same template (without invalidate_on) at run time: the one of testapp is listed.
    on = [c["invalidate_on"] for c in doc["caches"] if c["template"] == "camera:mac:{mac_address}"]
    assert ["camera.updated", "camera.deleted"] in on
    assert "source" not in created and all("source" not in c for c in doc["caches"])  # no module paths


def test_schema_is_get_only() -> None:
    assert Client().post("/__schema").status_code == 405
