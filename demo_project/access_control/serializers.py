from rest_framework import serializers

from .models import Camera


class CameraSerializer(serializers.ModelSerializer):
    model_name = serializers.CharField(source="model.name", read_only=True, default=None)

    class Meta:
        model = Camera
        fields = ["id", "mac_address", "name", "model", "model_name", "settings", "complex_id"]


class CameraSettingsSerializer(serializers.Serializer):
    settings = serializers.DictField()
