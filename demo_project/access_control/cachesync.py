"""The seed's sync_to_redis: every saved camera is mirrored at camera:mac:{mac_address}."""

from supergraph_messaging import CacheSync

from .models import Camera

CAMERA_FIELDS = ["id", "mac_address", "name", "model", "model_name", "settings", "complex_id"]

camera_sync = CacheSync(
    Camera,
    key="camera:mac:{mac_address}",
    fields={
        "id": "id",
        "mac_address": "mac_address",
        "name": "name",
        "model": "model",
        "model_name": lambda camera: camera.model.name if camera.model_id else None,
        "settings": "settings",
        "complex_id": "complex_id",
    },
    ttl=3600,
)
