from django.urls import path

from .authorize import authorize
from .views import asyncapi, schema

app_name = "supergraph_messaging"
urlpatterns = [
    path("__schema", schema, name="schema"),
    path("__asyncapi", asyncapi, name="asyncapi"),
    path("__authorize", authorize, name="authorize"),
]
