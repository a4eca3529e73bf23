"""Pattern 2: raw camera events become published events (and reach browsers over /subscribe)."""

from __future__ import annotations

from typing import Any

from django.utils import timezone
from rest_framework import serializers, status
from rest_framework.decorators import api_view, authentication_classes, permission_classes
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response

from supergraph_messaging import redis_publish
from supergraph_messaging.cache import stats

from .services import processor


class RawEventSerializer(serializers.Serializer):
    mac_address = serializers.CharField(max_length=32)
    event_type = serializers.CharField(max_length=64)
    data = serializers.DictField(required=False, default=dict)


@api_view(["POST"])
@authentication_classes([])
@permission_classes([AllowAny])
def raw_events(request: Request) -> Response:
    incoming = RawEventSerializer(data=request.data)
    incoming.is_valid(raise_exception=True)
    camera = processor.get_camera_by_mac(incoming.validated_data["mac_address"])
    if camera is None:
        return Response({"mac_address": ["Unknown camera."]}, status=status.HTTP_404_NOT_FOUND)
    event: dict[str, Any] = {
        "event_type": incoming.validated_data["event_type"],
        "camera_id": camera["id"],
        "mac_address": camera["mac_address"],
        "complex_id": camera.get("complex_id"),
        "model": camera.get("model_name"),
        "timestamp": timezone.now(),
        "data": incoming.validated_data["data"],
    }
    receivers = redis_publish("camera.events", event)
    if camera.get("complex_id") is not None:
        redis_publish(f"camera.events.complex:{camera['complex_id']}", event)
    return Response({"published": event, "receivers": receivers}, status=status.HTTP_202_ACCEPTED)


@api_view(["GET"])
@permission_classes([AllowAny])
def cache_stats(request: Request) -> Response:
    totals = stats.read()
    return Response(totals.get("camera:mac:{mac_address}", dict.fromkeys(stats.FIELDS, 0)))
