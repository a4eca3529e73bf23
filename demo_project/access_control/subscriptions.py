from supergraph_messaging import Subscription


class CameraChangesSubscription(Subscription):
    """Changes to cameras made through the API."""

    entity = "CameraChanges"
    channels = ["camera.created", "camera.updated", "camera.deleted", "camera.settings.updated"]
    filters = {"id": ["eq", "in"], "complex_id": ["eq", "in"]}
