from __future__ import annotations

from rest_framework import serializers

from tests.testapp.models import Camera


class CameraSerializer(serializers.ModelSerializer):
    class Meta:
        model = Camera
        fields = ["id", "mac_address", "name", "model", "settings", "complex_id"]  # never `secret`
