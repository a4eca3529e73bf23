"""Import the modules that register handlers, templates and subscriptions."""

from __future__ import annotations

from django.utils.module_loading import autodiscover_modules


def autodiscover_subscribers() -> None:
    """Import ``subscribers`` modules of installed apps (like admin autodiscovery)."""
    autodiscover_modules("subscribers")
