from django.contrib import admin

from .models import Camera, CameraModel

admin.site.register(CameraModel)
admin.site.register(Camera)
