from supergraph_messaging import Subscription


class CameraEventsSubscription(Subscription):
    """Processed camera events, as they happen."""

    entity = "CameraEvents"
    channels = ["camera.events"]
    filters = {
        "camera_id": ["eq", "in"],
        "complex_id": ["eq", "in"],
        "event_type": ["eq", "in"],
    }


class CameraChangesSubscription(Subscription):
    """Changes to cameras made through the API."""

    entity = "CameraChanges"
    channels = ["camera.created", "camera.updated", "camera.deleted", "camera.settings.updated"]
    filters = {"id": ["eq", "in"], "complex_id": ["eq", "in"]}
