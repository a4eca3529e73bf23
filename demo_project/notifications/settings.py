"""Notifications: reacts to camera settings changes (its own database of notifications)."""

from demo_project.common import service_settings

globals().update(service_settings("notifications", "demo_project.notifications.apps.NotificationsConfig"))
