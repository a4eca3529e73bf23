from django.contrib import admin
from django.urls import include, path
from django.views.generic import TemplateView
from rest_framework.routers import DefaultRouter

from demo_project.access_control.views import CameraViewSet
from demo_project.events.views import cache_stats, raw_events
from demo_project.notifications.views import NotificationViewSet

router = DefaultRouter()
router.register("cameras", CameraViewSet, basename="camera")
router.register("notifications", NotificationViewSet, basename="notification")

urlpatterns = [
    path("", TemplateView.as_view(template_name="index.html"), name="index"),
    path("admin/", admin.site.urls),
    path("api/raw-events/", raw_events, name="raw-events"),
    path("api/cache-stats/", cache_stats, name="cache-stats"),
    path("api/", include(router.urls)),
    path("", include("supergraph_messaging.urls")),
]
