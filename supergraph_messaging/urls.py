"""The HTTP routes every service mounts (``path("", include("supergraph_messaging.urls"))``): ``/__schema``,
``/__asyncapi``, ``/__authorize``, and the health probes ``/__health/live`` and ``/__health/ready``."""

from django.urls import path

from supergraph_messaging.gateway.authorize import authorize
from supergraph_messaging.gateway.schema_views import asyncapi, schema
from supergraph_messaging.operations import health

app_name = "supergraph_messaging"
urlpatterns = [
    path("__schema", schema, name="schema"),
    path("__asyncapi", asyncapi, name="asyncapi"),
    path("__authorize", authorize, name="authorize"),
    path("__health/live", health.live, name="health-live"),
    path("__health/ready", health.ready, name="health-ready"),
]
