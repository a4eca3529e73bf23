from django.urls import include, path

from .views import api, index

urlpatterns = [
    path("", index, name="index"),
    path("api/<str:resource>/<path:rest>", api, name="api"),
    path("api/<str:resource>/", api, {"rest": ""}, name="api-root"),
    path("", include("supergraph_messaging.urls")),
]
