from __future__ import annotations

from django.apps import AppConfig


class SupergraphMessagingConfig(AppConfig):
    name = "supergraph_messaging"
    verbose_name = "Supergraph messaging"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from . import (
            checks,  # noqa: F401 - registers the system checks
            credentials,  # noqa: F401 - announces logouts to the WebSocket hubs
        )
        from .discovery import autodiscover
        from .gateway import announce

        autodiscover()
        announce()
