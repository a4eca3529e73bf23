"""Settings, read live so that ``override_settings`` works in tests.

One typed property per key of the ``SUPERGRAPH_MESSAGING`` dict; nothing is
cached, because Django's test machinery swaps settings at run time.
"""

from __future__ import annotations

import os
from typing import Any

from django.conf import settings
from django.core.signals import setting_changed
from django.dispatch import receiver

DEFAULTS: dict[str, Any] = {
    "REDIS_URL": None,
    "CACHE_ALIAS": "default",
    "KEY_PREFIX": "",
    "CHANNEL_PREFIX": "",
    "DEFAULT_TTL": 3600,
    # How long (seconds) a cache fill may hold its lease before it expires.
    "LEASE_TTL": 10.0,
    # How long (seconds) the circuit breaker skips Redis after a failure.
    "BREAKER_INTERVAL": 1.0,
    # Socket timeouts (seconds) for the connections this app creates itself.
    "SOCKET_TIMEOUT": 1.0,
    "SOCKET_CONNECT_TIMEOUT": 0.5,
    # Publish events on a background thread after commit (requests do not wait for Redis).
    "PUBLISH_IN_BACKGROUND": True,
    # WebSocket limits.
    "WS_MAX_SUBSCRIPTIONS": 50,
    "WS_MAX_MESSAGE_BYTES": 65536,
    "WS_MAX_IN_VALUES": 100,
    "WS_QUEUE_SIZE": 1000,
    "WS_INIT_TIMEOUT": 10.0,
    "WS_MAX_MESSAGES_PER_SECOND": 100,
    # Server pings every WS_PING_INTERVAL s (0: never); no pong within WS_PONG_TIMEOUT s closes with 4008.
    "WS_PING_INTERVAL": 20.0,
    "WS_PONG_TIMEOUT": 20.0,
    # Dotted path to callable(token) -> user or None, for connection_init.payload.token.
    "WS_TOKEN_AUTHENTICATOR": None,
}


class Settings:
    """Typed access to ``SUPERGRAPH_MESSAGING``.

    Values are memoised because they sit on the cache-hit path, and the memo
    is dropped on Django's ``setting_changed`` (sent by ``override_settings``),
    so overrides still take effect at once.
    """

    def __init__(self) -> None:
        self._memo: dict[str, Any] = {}

    @property
    def _user(self) -> dict[str, Any]:
        value = getattr(settings, "SUPERGRAPH_MESSAGING", None)
        return value if isinstance(value, dict) else {}

    def _get(self, name: str) -> Any:
        try:
            return self._memo[name]
        except KeyError:
            value = self._memo[name] = self._user.get(name, DEFAULTS[name])
            return value

    def clear(self) -> None:
        self._memo.clear()

    @property
    def unknown_keys(self) -> list[str]:
        return sorted(set(self._user) - set(DEFAULTS))

    @property
    def configured_redis_url(self) -> str | None:
        url: str | None = self._get("REDIS_URL")
        return url

    @property
    def cache_alias(self) -> str:
        alias: str = self._get("CACHE_ALIAS")
        return alias

    @property
    def cache_location(self) -> str | None:
        """The first LOCATION of the django-redis cache, if there is one."""
        config = getattr(settings, "CACHES", {}).get(self.cache_alias)
        if not config or not is_django_redis_backend(config.get("BACKEND", "")):
            return None
        location = config.get("LOCATION")
        if isinstance(location, (list, tuple)):
            location = location[0] if location else None
        if isinstance(location, str) and "," in location:
            location = location.split(",")[0]
        return location or None

    @property
    def redis_url(self) -> str | None:
        """REDIS_URL, else the cache's LOCATION, else ``$REDIS_URL``."""
        try:
            url: str | None = self._memo["_redis_url"]
        except KeyError:
            url = self._memo["_redis_url"] = (
                self.configured_redis_url or self.cache_location or os.environ.get("REDIS_URL")
            )
        return url

    @property
    def key_prefix(self) -> str:
        prefix: str = self._get("KEY_PREFIX")
        return prefix

    @property
    def channel_prefix(self) -> str:
        prefix: str = self._get("CHANNEL_PREFIX")
        return prefix

    @property
    def default_ttl(self) -> int | None:
        ttl: int | None = self._get("DEFAULT_TTL")
        return ttl

    @property
    def lease_ttl(self) -> float:
        return float(self._get("LEASE_TTL"))

    @property
    def breaker_interval(self) -> float:
        return float(self._get("BREAKER_INTERVAL"))

    @property
    def socket_timeout(self) -> float:
        return float(self._get("SOCKET_TIMEOUT"))

    @property
    def socket_connect_timeout(self) -> float:
        return float(self._get("SOCKET_CONNECT_TIMEOUT"))

    @property
    def publish_in_background(self) -> bool:
        return bool(self._get("PUBLISH_IN_BACKGROUND"))

    @property
    def ws_max_subscriptions(self) -> int:
        return int(self._get("WS_MAX_SUBSCRIPTIONS"))

    @property
    def ws_max_message_bytes(self) -> int:
        return int(self._get("WS_MAX_MESSAGE_BYTES"))

    @property
    def ws_max_in_values(self) -> int:
        return int(self._get("WS_MAX_IN_VALUES"))

    @property
    def ws_queue_size(self) -> int:
        return int(self._get("WS_QUEUE_SIZE"))

    @property
    def ws_init_timeout(self) -> float:
        return float(self._get("WS_INIT_TIMEOUT"))

    @property
    def ws_max_messages_per_second(self) -> int:
        return int(self._get("WS_MAX_MESSAGES_PER_SECOND"))

    @property
    def ws_ping_interval(self) -> float:
        return float(self._get("WS_PING_INTERVAL") or 0)

    @property
    def ws_pong_timeout(self) -> float:
        return float(self._get("WS_PONG_TIMEOUT"))

    @property
    def ws_token_authenticator(self) -> str | None:
        path: str | None = self._get("WS_TOKEN_AUTHENTICATOR")
        return path


def is_django_redis_backend(backend: str) -> bool:
    return backend.startswith("django_redis.")


conf = Settings()


@receiver(setting_changed)
def _clear_memo(setting: str, **kwargs: Any) -> None:
    if setting in ("SUPERGRAPH_MESSAGING", "CACHES"):
        conf.clear()
