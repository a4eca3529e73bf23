from django.db import models


class CameraModel(models.Model):
    name = models.CharField(max_length=100, unique=True)

    def __str__(self) -> str:
        return self.name


class Camera(models.Model):
    mac_address = models.CharField(max_length=32, unique=True)
    name = models.CharField(max_length=100, blank=True, default="")
    model = models.ForeignKey(CameraModel, null=True, blank=True, on_delete=models.SET_NULL)
    settings = models.JSONField(default=dict, blank=True)
    complex_id = models.IntegerField(null=True, blank=True)

    def __str__(self) -> str:
        return f"{self.name or 'camera'} ({self.mac_address})"
