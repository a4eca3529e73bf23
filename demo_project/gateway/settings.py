"""The gateway: the live page, and one /subscribe serving every service's subscriptions.

It has no models and no users of its own (its database is in memory): it
learns the services' entities from their /__schema, asks the owning
service's /__authorize with a signed assertion of the (here anonymous) user,
and proxies the live page's /api/ calls to the service that owns each path.
Each service is given its entities and channel prefixes, and its own token.
"""

from demo_project.common import URLS, service_settings, service_token

SERVICES = {
    "access_control": {"url": URLS["access_control"], "entities": ["CameraChanges"],
                       "channels": ["camera.created", "camera.updated", "camera.deleted", "camera.settings."]},
    "events": {"url": URLS["events"], "entities": ["CameraEvents"], "channels": ["camera.events"]},
    "notifications": {"url": URLS["notifications"], "entities": [], "channels": ["notifications."]},
}
# It writes nothing, so it has no outbox: its events come from the services' streams and channels.
globals().update(service_settings("gateway", GATEWAY_SERVICES=SERVICES, GATEWAY_REFRESH_INTERVAL=10.0,
                                  DELIVERY="pubsub",
                                  SERVICE_TOKEN={name: service_token(name) for name in SERVICES}))
DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}}
SESSION_ENGINE = "django.contrib.sessions.backends.signed_cookies"
# Which service answers which /api/ path of the live page.
API_ROUTES = {"cameras": "access_control", "raw-events": "events", "cache-stats": "events",
              "notifications": "notifications"}
ADMIN_URL = URLS["access_control"] + "/admin/"
