"""The gateway: the live page, and one /subscribe serving every service's subscriptions.

It has no models and no users of its own (its database is in memory): it
learns the services' entities from their /__schema, forwards each client's
credentials to the owning service's /__authorize, and proxies the live
page's /api/ calls to the service that owns each path.
"""

from demo_project.common import URLS, service_settings

SERVICES = {name: URLS[name] for name in ("access_control", "events", "notifications")}
# It writes nothing, so it has no outbox: its events come from the services' streams and channels.
globals().update(service_settings("gateway", GATEWAY_SERVICES=SERVICES, GATEWAY_REFRESH_INTERVAL=10.0,
                                  DELIVERY="pubsub"))
DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}}
SESSION_ENGINE = "django.contrib.sessions.backends.signed_cookies"
# Which service answers which /api/ path of the live page.
API_ROUTES = {"cameras": "access_control", "raw-events": "events", "cache-stats": "events",
              "notifications": "notifications"}
ADMIN_URL = URLS["access_control"] + "/admin/"
