"""Notifications: reacts to camera settings changes (its own database of notifications)."""

from demo_project.common import (  # noqa: F401 - Django reads these names
    ALLOWED_HOSTS,
    BASE_APPS,
    CACHES,
    DEBUG,
    DEFAULT_AUTO_FIELD,
    LOGGING,
    MIDDLEWARE,
    REST_FRAMEWORK,
    SECRET_KEY,
    STATIC_URL,
    TEMPLATES,
    TIME_ZONE,
    USE_TZ,
    cookies,
    database,
    messaging,
)

INSTALLED_APPS = [*BASE_APPS, "demo_project.notifications.apps.NotificationsConfig"]
ROOT_URLCONF = "demo_project.notifications.urls"
ASGI_APPLICATION = "demo_project.asgi.application"
DATABASES = database("notifications")
SESSION_COOKIE_NAME, CSRF_COOKIE_NAME = cookies("notifications")
SUPERGRAPH_MESSAGING = messaging("notifications")
