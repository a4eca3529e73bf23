"""Pattern 3: another service reacts to camera settings changes."""

from typing import Any

from supergraph_messaging import redis_subscribe

from .models import Notification


@redis_subscribe("camera.settings.updated")
def notify_admins(data: dict[str, Any]) -> None:
    Notification.objects.create(message=f"Camera {data.get('mac_address')} settings updated", payload=data)
