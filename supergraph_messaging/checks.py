"""System checks: misconfiguration is reported by ``manage.py check``, never at import."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from django.conf import settings
from django.core.checks import Error, Warning, register

from .conf import DEFAULTS, conf, is_django_redis_backend


@register("supergraph_messaging")
def check_settings(app_configs: Any = None, **kwargs: Any) -> list[Any]:
    errors: list[Any] = []
    raw = getattr(settings, "SUPERGRAPH_MESSAGING", {})
    if not isinstance(raw, dict):
        return [
            Error(
                "SUPERGRAPH_MESSAGING must be a dict.",
                hint=f"Got {type(raw).__name__}.",
                id="supergraph_messaging.E001",
            )
        ]
    for key in conf.unknown_keys:
        errors.append(
            Error(
                f"Unknown key SUPERGRAPH_MESSAGING[{key!r}].",
                hint="Known keys: " + ", ".join(sorted(DEFAULTS)),
                id="supergraph_messaging.E002",
            )
        )
    alias = conf.cache_alias
    cache = getattr(settings, "CACHES", {}).get(alias)
    if cache is None:
        errors.append(
            Error(
                f"SUPERGRAPH_MESSAGING['CACHE_ALIAS'] is {alias!r}, but CACHES has no such cache.",
                hint="Add a django-redis cache under that alias, or set CACHE_ALIAS.",
                id="supergraph_messaging.E003",
            )
        )
    elif not is_django_redis_backend(cache.get("BACKEND", "")):
        errors.append(
            Error(
                f"CACHES[{alias!r}] is {cache.get('BACKEND')!r}, not a django-redis cache.",
                hint="Use 'django_redis.cache.RedisCache' as its BACKEND.",
                id="supergraph_messaging.E004",
            )
        )
    url = conf.redis_url
    if url is None:
        errors.append(
            Error(
                "No Redis URL could be determined.",
                hint="Set SUPERGRAPH_MESSAGING['REDIS_URL'] or a django-redis cache LOCATION.",
                id="supergraph_messaging.E005",
            )
        )
    elif not _valid_url(url):
        errors.append(
            Error(
                "SUPERGRAPH_MESSAGING['REDIS_URL'] is not a redis://, rediss:// or unix:// URL.",
                hint=f"Got {url.split('@')[-1]!r} (credentials hidden).",
                id="supergraph_messaging.E006",
            )
        )
    for name in ("DEFAULT_TTL",):
        value = raw.get(name, DEFAULTS[name])
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value <= 0):
            errors.append(
                Error(
                    f"SUPERGRAPH_MESSAGING[{name!r}] must be a positive integer or None.",
                    hint=f"Got {value!r}.",
                    id="supergraph_messaging.E007",
                )
            )
    for name in ("KEY_PREFIX", "CHANNEL_PREFIX"):
        if not isinstance(raw.get(name, ""), str):
            errors.append(
                Error(
                    f"SUPERGRAPH_MESSAGING[{name!r}] must be a string.",
                    id="supergraph_messaging.E008",
                )
            )
    prefix = raw.get("KEY_PREFIX", "")
    if isinstance(prefix, str) and any(c in prefix for c in "*?[]"):
        errors.append(
            Warning(
                "KEY_PREFIX contains glob characters; pattern invalidation escapes them.",
                id="supergraph_messaging.W001",
            )
        )
    return errors


def _valid_url(url: str) -> bool:
    try:
        parts = urlsplit(url)
    except ValueError:
        return False
    if parts.scheme == "unix":
        return bool(parts.path)
    if parts.scheme not in ("redis", "rediss"):
        return False
    try:
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError:
        return False
    return bool(parts.hostname)


@register("supergraph_messaging")
def check_event_viewsets(app_configs: Any = None, **kwargs: Any) -> list[Any]:
    """Run each events-publishing ViewSet's own checks (E101, E102)."""
    from django.urls import get_resolver

    from .events import registry

    get_resolver().url_patterns  # noqa: B018 - imports the views, registering their ViewSets
    errors: list[Any] = []
    for registration in registry:
        if registration.viewset is not None:
            errors.extend(registration.viewset.check_events())
    return errors


@register("supergraph_messaging")
def check_subscriptions(app_configs: Any = None, **kwargs: Any) -> list[Any]:
    """Subscriptions: known operators only (E201), one class per entity (E202)."""
    from .subscriptions import autodiscover_subscriptions, registry

    autodiscover_subscriptions()
    errors: list[Any] = []
    seen: dict[str, type] = {}
    for cls in registry:
        for problem in cls.check():
            errors.append(Error(problem, obj=cls, id="supergraph_messaging.E201"))
        other = seen.setdefault(cls.entity, cls)
        if other is not cls:
            errors.append(Error(
                f"Subscription entity {cls.entity!r} is declared twice: "
                f"{other.__module__}.{other.__qualname__} and {cls.__module__}.{cls.__qualname__}.",
                obj=cls,
                id="supergraph_messaging.E202",
            ))
    return errors
