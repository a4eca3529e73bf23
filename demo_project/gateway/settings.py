"""The gateway: the live page, and one /subscribe serving every service's subscriptions.

It has no models and no users of its own (its database is in memory): it
learns the services' entities from their /__schema, forwards each client's
credentials to the owning service's /__authorize, and proxies the live
page's /api/ calls to the service that owns each path.
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
    messaging,
)

INSTALLED_APPS = BASE_APPS
ROOT_URLCONF = "demo_project.gateway.urls"
ASGI_APPLICATION = "demo_project.asgi.application"
DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}}
SESSION_ENGINE = "django.contrib.sessions.backends.signed_cookies"
SESSION_COOKIE_NAME, CSRF_COOKIE_NAME = cookies("gateway")
SERVICES = {name: URLS[name] for name in ("access_control", "events", "notifications")}
SUPERGRAPH_MESSAGING = messaging("gateway", GATEWAY_SERVICES=SERVICES, GATEWAY_REFRESH_INTERVAL=10.0)
# Which service answers which /api/ path of the live page.
API_ROUTES = {"cameras": "access_control", "raw-events": "events", "cache-stats": "events",
              "notifications": "notifications"}
ADMIN_URL = URLS["access_control"] + "/admin/"
