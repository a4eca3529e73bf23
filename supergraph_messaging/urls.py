from django.urls import path

from .views import schema

app_name = "supergraph_messaging"
urlpatterns = [path("__schema", schema, name="schema")]
