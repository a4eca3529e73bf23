"""Events: raw camera events in, published events out.

Cameras are looked up through the cache, with HTTP to access_control on a miss.
"""

from demo_project.common import URLS, service_settings

globals().update(service_settings("events", "demo_project.events.apps.EventsConfig"))
# The seed's fallback path: a camera not in the cache is fetched from access_control over HTTP.
ACCESS_CONTROL_URL = URLS["access_control"]
