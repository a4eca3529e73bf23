"""Pattern 1 and 3, the publishing side: the camera API publishes its changes."""

from typing import Any

from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response

from supergraph_messaging import EventConfig, ModelViewSet

from .models import Camera
from .serializers import CameraSerializer, CameraSettingsSerializer


class CameraViewSet(ModelViewSet):
    queryset = Camera.objects.select_related("model").order_by("id")
    serializer_class = CameraSerializer
    events = EventConfig(
        publish={
            "create": "camera.created",
            "update": "camera.updated",
            "delete": "camera.deleted",
            "update_settings": "camera.settings.updated",
        },
        payload_fields=["id", "mac_address", "name", "model", "model_name", "settings", "complex_id"],
    )

    def get_queryset(self) -> Any:
        queryset = super().get_queryset()
        mac = self.request.query_params.get("mac_address")
        return queryset.filter(mac_address=mac) if mac else queryset

    @action(detail=True, methods=["patch"], url_path="settings")
    def update_settings(self, request: Request, pk: Any = None) -> Response:
        camera = self.get_object()
        serializer = CameraSettingsSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        camera.settings = serializer.validated_data["settings"]
        camera.save(update_fields=["settings"])
        return Response(self.get_serializer(camera).data)
