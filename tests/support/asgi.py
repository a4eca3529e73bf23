import gc
import os

from channels.routing import ProtocolTypeRouter, URLRouter
from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.support.settings")
django_asgi_app = get_asgi_application()

from supergraph_messaging.routing import websocket_urlpatterns  # noqa: E402

application = ProtocolTypeRouter({"http": django_asgi_app, "websocket": URLRouter(websocket_urlpatterns)})

# docs/deployment.md's garbage-collector setting, for the benchmarks that compare with and without it.
if os.environ.get("SGM_GC_THRESHOLD"):
    gc.set_threshold(int(os.environ["SGM_GC_THRESHOLD"]))
