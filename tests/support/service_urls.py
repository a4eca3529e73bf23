"""The URLs of the beacon service and of the gateway in the gateway tests: only this app's."""

from django.urls import include, path

urlpatterns = [path("", include("supergraph_messaging.urls"))]
