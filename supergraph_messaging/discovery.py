"""Import the modules that register handlers, templates and subscriptions: once, from ``ready()``.

Like the admin's autodiscovery, this runs in ``AppConfig.ready()`` so that
every process (the ASGI server, ``messaging_listen``, ``manage.py check``)
sees the same registries without each entry point remembering to ask.
"""

from __future__ import annotations

from django.utils.module_loading import autodiscover_modules

#: The module names looked for in every installed app.
MODULES = ("subscribers", "subscriptions")


def autodiscover() -> None:
    """Import ``subscribers`` and ``subscriptions`` modules of installed apps."""
    for name in MODULES:
        autodiscover_modules(name)
