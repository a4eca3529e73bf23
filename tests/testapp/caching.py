"""Cached lookups whose invalidate_on the messaging_listen worker serves."""

from __future__ import annotations

import os
from typing import Any

from supergraph_messaging import CacheSync, redis_cache


@redis_cache(key="camera:mac:{mac_address}", invalidate_on=["camera.updated", "camera.deleted"])
def camera_by_mac(mac_address: str) -> dict[str, Any]:
    return {"mac_address": mac_address}


@redis_cache(key="tenant:{tenant}:camera:{mac_address}", invalidate_on=["camera.moved"])
def tenant_camera(tenant: str, mac_address: str) -> dict[str, Any]:
    return {"tenant": tenant, "mac_address": mac_address}


@redis_cache(key="tenant:{tenant_id}:user:{user_id}", invalidate_on=["tenant.user.changed"],
             invalidate_on_missing="skip")
def tenant_user(tenant_id: Any, user_id: Any) -> dict[str, Any]:
    return {"tenant_id": tenant_id, "user_id": user_id}


@redis_cache(key="chaos:row:{row}", invalidate_on=["chaos.rows"])
def chaos_version(row: int) -> int:
    """The durability harness's cached read: a row's version, which its events must keep fresh."""
    from tests.testapp.models import Camera

    return Camera.objects.filter(mac_address=f"row{row}").values_list("complex_id", flat=True).first() or 0


if os.environ.get("SGM_CHAOS_CACHESYNC"):  # the recovery test's daphne (tests/durability/test_recovery.py)
    from tests.testapp.models import Camera

    CacheSync(Camera, key="chaos:sync:{mac_address}", fields=["complex_id"])
