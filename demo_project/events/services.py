"""Pattern 1, the reading side: the events service looks cameras up through the cache."""

from __future__ import annotations

import logging
from typing import Any

import httpx
from django.conf import settings

from supergraph_messaging import redis_cache

logger = logging.getLogger("demo.events")

CAMERA_FIELDS = ["id", "mac_address", "name", "model", "model_name", "settings", "complex_id"]


class CameraProcessor:
    @redis_cache(key="camera:mac:{mac_address}", ttl=3600, invalidate_on=["camera.updated", "camera.deleted"])
    def get_camera_by_mac(self, mac_address: str) -> dict[str, Any] | None:
        """On a miss: HTTP to access_control (the seed's fallback); then served from Redis."""
        response = httpx.get(f"{settings.ACCESS_CONTROL_URL}/api/cameras/",
                             params={"mac_address": mac_address}, timeout=5)
        response.raise_for_status()
        rows = response.json()
        rows = rows.get("results", rows) if isinstance(rows, dict) else rows
        if not rows:
            return None  # not cached: a camera created later must be found
        return {field: rows[0].get(field) for field in CAMERA_FIELDS}


processor = CameraProcessor()
