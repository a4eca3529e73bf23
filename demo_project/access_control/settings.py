"""AccessControl: the cameras (its own database), their API, the camera cache it keeps filled."""

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

INSTALLED_APPS = [*BASE_APPS, "demo_project.access_control.apps.AccessControlConfig"]
ROOT_URLCONF = "demo_project.access_control.urls"
ASGI_APPLICATION = "demo_project.asgi.application"
DATABASES = database("access_control")
SESSION_COOKIE_NAME, CSRF_COOKIE_NAME = cookies("access_control")
SUPERGRAPH_MESSAGING = messaging("access_control")
