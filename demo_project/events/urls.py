from django.urls import include, path

from .views import cache_stats, raw_events

urlpatterns = [
    path("api/raw-events/", raw_events, name="raw-events"),
    path("api/cache-stats/", cache_stats, name="cache-stats"),
    path("", include("supergraph_messaging.urls")),
]
