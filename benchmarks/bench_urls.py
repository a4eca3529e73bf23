"""The write-latency sides' URLs, each behind its own prefix.

In the test project's router ``plain`` comes five viewsets after ``cameras``,
so every anchor request tried about 26 more URL patterns than ours did (seen
by counting calls): the anchor was slower for a reason that has nothing to do
with events. Here each side matches one prefix, then its own router; the
anchor comes first, so ours is the one paying the extra failed prefix.
"""

from __future__ import annotations

from typing import Any

from django.urls import include, path
from rest_framework.routers import SimpleRouter

from tests.testapp.views import CameraViewSet, PlainCameraViewSet


def _routes(viewset: Any, basename: str) -> Any:
    router = SimpleRouter()
    router.register("", viewset, basename=basename)
    return include(router.urls)


urlpatterns = [
    path("plain/", _routes(PlainCameraViewSet, "plain")),
    path("cameras/", _routes(CameraViewSet, "camera")),
]
