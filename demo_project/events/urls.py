from django.urls import include, path

from supergraph_messaging.operations.metrics import metrics_view

from .views import cache_stats, raw_events

urlpatterns = [
    path("api/raw-events/", raw_events, name="raw-events"),
    path("api/cache-stats/", cache_stats, name="cache-stats"),
    path("metrics", metrics_view, name="metrics"),  # Prometheus; open here because SCHEMA_ACCESS is public
    path("", include("supergraph_messaging.urls")),
]
