from __future__ import annotations

from typing import Any

from rest_framework.permissions import IsAuthenticated

from supergraph_messaging import Subscription


class CameraEventsSubscription(Subscription):
    entity = "CameraEvents"
    channels = ["camera.events"]
    filters = {
        "camera_id": ["eq", "in", "ne", "gt", "gte", "lt", "lte"],
        "complex_id": ["eq", "in"],
        "event_type": ["eq", "contains", "icontains"],
    }


class CameraEventsLiteSubscription(Subscription):
    """A second entity on the same channel."""

    entity = "CameraEventsLite"
    channels = ["camera.events"]
    filters = {"event_type": ["eq"]}


class ComplexEventsSubscription(Subscription):
    entity = "ComplexEvents"
    channels = ["camera.events.complex:*"]
    filters = {"camera_id": ["eq", "in"]}


class SecretSubscription(Subscription):
    entity = "Secret"
    channels = ["secret.events"]
    permission_classes = [IsAuthenticated]


class TenantSubscription(Subscription):
    entity = "TenantEvents"
    channels = ["tenant.events"]
    filters = {"tenant_id": ["eq", "in"], "kind": ["eq"]}

    @classmethod
    def get_server_filters(cls, user: Any) -> dict[str, Any]:
        return {"tenant_id": 1}


class ChaosRowsSubscription(Subscription):
    """The durability harness's rows, for its WebSocket counters."""

    entity = "ChaosRows"
    channels = ["chaos.rows"]
    filters = {"row": ["eq", "in"]}


class CameraLifecycleSubscription(Subscription):
    """Two channels: a client may see events on one and none on the other (resume of an unseen channel)."""

    entity = "CameraLifecycle"
    channels = ["camera.created", "camera.updated"]
