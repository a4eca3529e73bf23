from django.contrib import admin
from django.urls import include, path

from supergraph_messaging.operations.metrics import metrics_view

urlpatterns = [
    path("admin/", admin.site.urls),
    path("", include("tests.testapp.urls")),
    path("", include("supergraph_messaging.urls")),
    path("metrics", metrics_view),
]
