"""What a valid value of each setting is (predicates the system checks also use), and how a value
reads as a Python value (converters)."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit


def is_positive_number(value: Any) -> bool:
    return (
        isinstance(value, (int, float))
        and not isinstance(value, bool)
        and math.isfinite(value)
        and value > 0
    )


def is_at_least_a_millisecond(value: Any) -> bool:
    """A lease is set with ``PX`` (whole milliseconds): below 1 ms it would be ``PX 0``, which Redis refuses."""
    return is_positive_number(value) and value >= 0.001


def is_positive_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def is_non_negative_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def is_optional_non_negative_int(value: Any) -> bool:
    return value is None or is_non_negative_int(value)


def is_optional_non_negative(value: Any) -> bool:
    return value is None or (value == 0 and not isinstance(value, bool)) or is_positive_number(value)


def is_optional_positive_number(value: Any) -> bool:
    return value is None or is_positive_number(value)


def is_optional_positive_int(value: Any) -> bool:
    return value is None or is_positive_int(value)


def is_bool(value: Any) -> bool:
    return isinstance(value, bool)


def is_str(value: Any) -> bool:
    return isinstance(value, str)


def is_optional_str(value: Any) -> bool:
    return value is None or (isinstance(value, str) and bool(value))


def is_optional_str_list(value: Any) -> bool:
    return value is None or (isinstance(value, (list, tuple)) and all(isinstance(v, str) and v for v in value))


_SERVICE_NAME = re.compile(r"[\w.-]+")


_SERVICE_URL = re.compile(r"https?://[^\s/?#]+(/[^\s?#]*)?")


_CHANNEL_PREFIX = re.compile(r"[^\s*?\[\]\\]+")  # literal: no glob character, no space


def _is_service_entry(entry: Any) -> bool:
    if isinstance(entry, str):
        return bool(_SERVICE_URL.fullmatch(entry))
    if not isinstance(entry, dict) or not set(entry) <= {"url", "entities", "channels"}:
        return False
    entities, channels = entry.get("entities"), entry.get("channels")
    return (isinstance(entry.get("url"), str) and bool(_SERVICE_URL.fullmatch(entry["url"]))
            and (entities is None or (isinstance(entities, list) and all(isinstance(e, str) and e for e in entities)))
            and (channels is None or (isinstance(channels, list)
                                      and all(isinstance(c, str) and _CHANNEL_PREFIX.fullmatch(c) for c in channels))))


def is_service_map(value: Any) -> bool:
    """``{name: url}`` or ``{name: {"url": url, "entities": [...], "channels": [prefixes]}}``."""
    if value is None:
        return True
    if not isinstance(value, dict):
        return False
    return all(isinstance(name, str) and bool(_SERVICE_NAME.fullmatch(name)) and _is_service_entry(entry)
               for name, entry in value.items())


def is_service_token(value: Any) -> bool:
    """A secret of at least 32 characters, or (on a gateway) ``{service name: its secret}``."""
    if value is None or (isinstance(value, str) and len(value) >= 32):
        return True
    return isinstance(value, dict) and bool(value) and all(
        isinstance(name, str) and isinstance(token, str) and len(token) >= 32 for name, token in value.items())


@dataclass(frozen=True)
class ServiceEntry:
    """One service behind a gateway: where it answers and, if configured, what it may own."""

    url: str
    #: The only entities it may describe (None: it is pinned to the ones it described first).
    entities: tuple[str, ...] | None = None
    #: Channel prefixes it owns (None: only exact channels no other service claimed first; no globs).
    channels: tuple[str, ...] | None = None


def is_origin(value: Any) -> bool:
    """``scheme://host[:port]`` and nothing more (no path, no wildcard)."""
    if not isinstance(value, str):
        return False
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError:
        return False
    return (parts.scheme in ("http", "https") and bool(parts.hostname) and "*" not in value
            and parts.path in ("", "/") and not parts.query and not parts.fragment)


def is_optional_origin_list(value: Any) -> bool:
    return value is None or (isinstance(value, (list, tuple)) and all(is_origin(v) for v in value))


def optional_str(value: Any) -> str | None:
    return None if value is None else str(value)


def optional_int(value: Any) -> int | None:
    return None if value is None else int(value)


def optional_float(value: Any) -> float | None:
    return None if value is None else float(value)


def seconds_or_zero(value: Any) -> float:
    return float(value or 0)


def strings(value: Any) -> tuple[str, ...]:
    return tuple(value or ())


def origins(value: Any) -> tuple[str, ...] | None:
    return None if value is None else tuple(o.rstrip("/").lower() for o in value)


def own_token(value: Any) -> str | None:
    """A service's own token (a gateway's dict of tokens, one per service, is read by ``token_for``)."""
    return value if isinstance(value, str) else None


def service_entries(value: Any) -> dict[str, ServiceEntry]:
    return {name: ServiceEntry(entry) if isinstance(entry, str) else ServiceEntry(
        entry["url"],
        tuple(entry["entities"]) if entry.get("entities") is not None else None,
        tuple(entry["channels"]) if entry.get("channels") is not None else None)
        for name, entry in (value or {}).items()}


NUMBER = "a positive number (seconds)"


def is_django_redis_backend(backend: str) -> bool:
    return backend.startswith("django_redis.")


DJANGO_REDIS_CACHE = "django.core.cache.backends.redis.RedisCache"


def is_redis_backend(backend: str) -> bool:
    """django-redis, or Django's own ``RedisCache`` (whose LOCATION we can use, not its pool)."""
    return is_django_redis_backend(backend) or backend == DJANGO_REDIS_CACHE
