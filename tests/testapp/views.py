from __future__ import annotations

from typing import Any

from django.db import transaction
from django.http import HttpRequest, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from rest_framework import status, viewsets
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response

from supergraph_messaging import EventConfig, ModelViewSet, publish_event
from tests.testapp.caching import chaos_version
from tests.testapp.models import Camera
from tests.testapp.serializers import CameraSerializer

CAMERA_EVENTS = EventConfig(
    publish={
        "create": "camera.created",
        "update": "camera.updated",
        "delete": "camera.deleted",
        "update_settings": "camera.settings.updated",
    },
    payload_fields=["id", "mac_address", "model", "settings"],
)


class CameraViewSet(ModelViewSet):
    queryset = Camera.objects.all()
    serializer_class = CameraSerializer
    events = CAMERA_EVENTS

    # Not named `settings`: that would shadow APIView.settings (DRF's api_settings).
    @action(detail=True, methods=["patch"], url_path="settings")
    def update_settings(self, request: Request, pk: Any = None) -> Response:
        camera = self.get_object()
        if not isinstance(request.data.get("settings"), dict):
            return Response({"settings": "must be an object"}, status=status.HTTP_400_BAD_REQUEST)
        camera.settings = request.data["settings"]
        camera.save(update_fields=["settings"])
        return Response(self.get_serializer(camera).data)


class AllFieldsCameraViewSet(ModelViewSet):
    """No payload_fields: the whole representation, still never `secret`."""

    queryset = Camera.objects.all()
    serializer_class = CameraSerializer
    events = EventConfig(publish={"create": "allcam.created", "update": "allcam.updated"})


class FailingCameraViewSet(CameraViewSet):
    """Saves, then fails inside an explicit atomic block."""

    def create(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        with transaction.atomic():
            super().create(request, *args, **kwargs)
            raise RuntimeError("failed after the save")


class RaisingAfterSaveViewSet(CameraViewSet):
    """Saves, then fails with no atomic block of its own (ATOMIC_REQUESTS decides)."""

    def create(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        super().create(request, *args, **kwargs)
        raise RuntimeError("failed after the save")


class SeedStyleViewSet(ModelViewSet):
    """As in the seed: `model = ...` only."""

    model = Camera
    events = EventConfig(publish={"create": "seed.created"})


class PlainCameraViewSet(viewsets.ModelViewSet):
    queryset = Camera.objects.all()
    serializer_class = CameraSerializer


@csrf_exempt
def chaos_row(request: HttpRequest, row: int) -> JsonResponse:
    """The durability harness's web endpoint. POST: bump the row's version and publish it, in one
    transaction; GET: the version through the cache (fills it)."""
    if request.method != "POST":
        return JsonResponse({"version": chaos_version(row)})
    with transaction.atomic():
        camera, _ = Camera.objects.select_for_update().get_or_create(mac_address=f"row{row}")
        camera.complex_id = (camera.complex_id or 0) + 1
        camera.save(update_fields=["complex_id"])
        publish_event("chaos.rows", {"row": row, "version": camera.complex_id})
    return JsonResponse({"version": camera.complex_id})
