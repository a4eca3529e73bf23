"""The HTTP routes every service mounts (``path("", include("supergraph_messaging.urls"))``): ``/__schema``,
``/__asyncapi`` and ``/__authorize``."""

from django.urls import path

from supergraph_messaging.gateway.authorize import authorize
from supergraph_messaging.gateway.schema_views import asyncapi, schema

app_name = "supergraph_messaging"
urlpatterns = [
    path("__schema", schema, name="schema"),
    path("__asyncapi", asyncapi, name="asyncapi"),
    path("__authorize", authorize, name="authorize"),
]
