from django.apps import AppConfig


class NotificationsConfig(AppConfig):
    name = "demo_project.notifications"
    label = "notifications"
