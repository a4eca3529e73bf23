"""The app's configuration: what ``ready()`` registers.

Like the admin's autodiscovery, ``ready()`` imports every installed app's
``subscribers`` and ``subscriptions`` modules, so that every process (the
ASGI server, ``messaging_listen``, ``manage.py check``) sees the same
registries without each entry point remembering to ask. Nothing here talks
to Redis or starts a thread: ``migrate`` and ``check`` run it too (the
Prometheus exporter's thread starts at a process's first count).
"""

from __future__ import annotations

from django.apps import AppConfig
from django.utils.module_loading import autodiscover_modules

#: The module names looked for in every installed app.
MODULES = ("subscribers", "subscriptions")


def autodiscover() -> None:
    """Import ``subscribers`` and ``subscriptions`` modules of installed apps."""
    for name in MODULES:
        autodiscover_modules(name)


class SupergraphMessagingConfig(AppConfig):
    name = "supergraph_messaging"
    verbose_name = "Supergraph messaging"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from supergraph_messaging import checks  # noqa: F401 - registers the system checks
        from supergraph_messaging.realtime import auth  # noqa: F401 - announces logouts to the WebSocket hubs

        autodiscover()
        from supergraph_messaging import counters
        from supergraph_messaging.operations import metrics

        if metrics.available():  # the [metrics] extra: export from the process's first count on
            counters.on_first_count = metrics.start
