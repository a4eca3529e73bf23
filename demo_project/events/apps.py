from django.apps import AppConfig


class EventsConfig(AppConfig):
    name = "demo_project.events"
    label = "events"
