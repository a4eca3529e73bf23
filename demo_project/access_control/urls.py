from django.contrib import admin
from django.urls import include, path
from rest_framework.routers import DefaultRouter

from supergraph_messaging.operations.metrics import metrics_view

from .views import CameraViewSet

router = DefaultRouter()
router.register("cameras", CameraViewSet, basename="camera")

urlpatterns = [
    path("admin/", admin.site.urls),
    path("api/", include(router.urls)),
    path("metrics", metrics_view, name="metrics"),  # Prometheus; open here because SCHEMA_ACCESS is public
    path("", include("supergraph_messaging.urls")),
]
