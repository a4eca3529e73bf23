from django.urls import include, path

from supergraph_messaging.operations.metrics import metrics_view

from .views import api, index

urlpatterns = [
    path("", index, name="index"),
    path("api/<str:resource>/<path:rest>", api, name="api"),
    path("api/<str:resource>/", api, {"rest": ""}, name="api-root"),
    path("metrics", metrics_view, name="metrics"),  # Prometheus; open here because SCHEMA_ACCESS is public
    path("", include("supergraph_messaging.urls")),
]
