"""Settings: each key of ``SUPERGRAPH_MESSAGING`` declared once, with its default and validator.

Each key is a :class:`Setting` attribute of :class:`Settings`: a typed,
memoised property. :data:`SETTINGS`, the system checks and
``docs/settings.md`` are derived from those declarations, so a setting
cannot be added without being checked and documented. The keys are grouped
by concern (:class:`RedisSettings` ...). Values are read live
(``override_settings`` works); a value that fails its validator at run
time is replaced by the default and logged once,
so a bad setting that slipped past ``manage.py check`` degrades instead of
breaking every call.
"""

from __future__ import annotations

import logging
import os
from typing import Any
from urllib.parse import urlsplit

from django.conf import settings
from django.core.signals import setting_changed
from django.dispatch import receiver

from supergraph_messaging.conf.declarations import DeliverySettings, GatewaySettings, RedisSettings, WebSocketSettings
from supergraph_messaging.conf.setting import Setting
from supergraph_messaging.conf.validators import (
    DJANGO_REDIS_CACHE,
    ServiceEntry,
    is_django_redis_backend,
    is_redis_backend,
)

logger = logging.getLogger("supergraph_messaging.conf")

__all__ = [
    "DEFAULTS",
    "DJANGO_REDIS_CACHE",
    "SETTINGS",
    "ServiceEntry",
    "Setting",
    "Settings",
    "conf",
    "is_django_redis_backend",
    "is_redis_backend",
    "settings_reference",
]


class Settings(RedisSettings, DeliverySettings, WebSocketSettings, GatewaySettings):
    """Typed access to ``SUPERGRAPH_MESSAGING``: each key declared once, below.

    Values are memoised because they sit on the cache-hit path, and the memo
    is dropped on Django's ``setting_changed`` (sent by ``override_settings``),
    so overrides still take effect at once.
    """

    def __init__(self) -> None:
        self._memo: dict[str, Any] = {}
        self._converted: dict[str, Any] = {}
        self._reported: set[tuple[str, str]] = set()

    @property
    def _user(self) -> dict[str, Any]:
        if not settings.configured:  # a plain asyncio script using url=
            return {}
        value = getattr(settings, "SUPERGRAPH_MESSAGING", None)
        return value if isinstance(value, dict) else {}

    def _get(self, name: str) -> Any:
        """The valid value of key ``name`` as set (or its default)."""
        try:
            return self._memo[name]
        except KeyError:
            pass
        spec = SETTINGS[name]
        value = self._user.get(name, spec.default)
        if not spec.valid(value):
            if (name, repr(value)) not in self._reported:
                self._reported.add((name, repr(value)))
                logger.error("SUPERGRAPH_MESSAGING[%r] must be %s, got %r; using the default %r "
                             "(manage.py check reports this).", name, spec.expected, value, spec.default)
            value = spec.default
        self._memo[name] = value
        return value

    def clear(self) -> None:
        self._memo.clear()
        self._converted.clear()
        for spec in SETTINGS.values():
            self.__dict__.pop(spec.attr, None)  # memoised by Setting.__get__

    @property
    def unknown_keys(self) -> list[str]:
        return sorted(set(self._user) - set(SETTINGS))

    def invalid_values(self) -> list[tuple[str, Setting[Any], Any]]:
        """(name, spec, value) of every set value its validator rejects."""
        user = self._user
        return [(name, spec, user[name]) for name, spec in SETTINGS.items()
                if name in user and not spec.valid(user[name])]

    # -- derived from several keys, or from other settings ---------------------
    @property
    def cache_config(self) -> dict[str, Any] | None:
        if not settings.configured:
            return None
        config = getattr(settings, "CACHES", {}).get(self.cache_alias)
        return config if isinstance(config, dict) else None

    @property
    def cache_location(self) -> str | None:
        """The first LOCATION of the (django-redis or Django) Redis cache, if there is one."""
        config = self.cache_config
        if not config or not is_redis_backend(config.get("BACKEND", "")):
            return None
        location = config.get("LOCATION")
        if isinstance(location, (list, tuple)):
            location = location[0] if location else None
        if isinstance(location, str) and "," in location:
            location = location.split(",")[0]
        return location or None

    @property
    def reuses_cache_pool(self) -> bool:
        """True when sync calls can borrow django-redis's connection pool."""
        config = self.cache_config
        return bool(config) and is_django_redis_backend(str(config.get("BACKEND", "")))  # type: ignore[union-attr]

    @property
    def redis_url(self) -> str | None:
        """REDIS_URL, else the cache's LOCATION, else ``$REDIS_URL``."""
        try:
            url: str | None = self._converted["_redis_url"]
        except KeyError:
            url = self._converted["_redis_url"] = (
                self.configured_redis_url or self.cache_location or os.environ.get("REDIS_URL")
            )
        return url

    @property
    def durable(self) -> bool:
        return self.delivery == "durable"

    @property
    def durable_replicas(self) -> int:
        """``DURABLE_REPLICAS``; unset, 1 behind Sentinel (which implies a replica to promote), else 0."""
        value = self.configured_durable_replicas
        if value is None:
            return 1 if "sentinel" in urlsplit(self.redis_url or "").scheme else 0
        return value

    def token_for(self, service: str) -> str | None:
        """The token a gateway uses with ``service``: its own entry, or the one shared token."""
        token = self._get("SERVICE_TOKEN")
        return token.get(service) if isinstance(token, dict) else token


#: Every key, by name, as declared on :class:`Settings` (in the order of its groups).
SETTINGS: dict[str, Setting[Any]] = {spec.key: spec for group in Settings.__mro__[1:-1]
                                     for spec in vars(group).values() if isinstance(spec, Setting)}

DEFAULTS: dict[str, Any] = {name: spec.default for name, spec in SETTINGS.items()}


def settings_reference() -> str:
    """``docs/settings.md``: every key with its default, what it accepts, and what it does."""
    lines = ["# Settings", "",
             "Every key of `SUPERGRAPH_MESSAGING`, generated from `supergraph_messaging/conf/` "
             "(`python -m supergraph_messaging.conf > docs/settings.md`; a test fails when this page is stale). "
             "`manage.py check` validates each value against what it accepts, and reports an unknown key (E002) "
             "with the closest known name. Values are read live (`override_settings` works); a bad value that "
             "reaches run time anyway falls back to the default with an ERROR log naming the key.", "",
             "| Setting | Default | Accepts | What it does |", "|---|---|---|---|"]
    for name, spec in SETTINGS.items():
        cells = [f"`{name}`", f"`{spec.default!r}`", spec.expected, spec.doc]
        lines.append("| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |")
    return "\n".join(lines) + "\n"


conf = Settings()


@receiver(setting_changed)
def _clear_memo(setting: str, **kwargs: Any) -> None:
    if setting in ("SUPERGRAPH_MESSAGING", "CACHES"):
        conf.clear()

