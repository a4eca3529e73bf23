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

