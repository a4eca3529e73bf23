"""Events: raw camera events in, published events out.

Cameras are looked up through the cache, with HTTP to access_control on a miss.
"""

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
    URLS,
    USE_TZ,
    cookies,
    database,
    messaging,
)

INSTALLED_APPS = [*BASE_APPS, "demo_project.events.apps.EventsConfig"]
ROOT_URLCONF = "demo_project.events.urls"
ASGI_APPLICATION = "demo_project.asgi.application"
DATABASES = database("events")
SESSION_COOKIE_NAME, CSRF_COOKIE_NAME = cookies("events")
SUPERGRAPH_MESSAGING = messaging("events")
# The seed's fallback path: a camera not in the cache is fetched from access_control over HTTP.
ACCESS_CONTROL_URL = URLS["access_control"]
