"""The system checks of the Redis connection: the URL and the cache it may come from, redis-py's version,
and (``check --database``) the server's version against the options configured."""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlsplit

import redis
from django.core.checks import Error, Tags, Warning, register

from supergraph_messaging.conf import conf, is_redis_backend
from supergraph_messaging.exceptions import MessagingError
from supergraph_messaging.redis import urls
from supergraph_messaging.redis.keys import hash_tag


def check_location(raw: dict[str, Any]) -> list[Any]:
    errors: list[Any] = []
    alias = conf.cache_alias
    cache = conf.cache_config
    explicit_url = conf.configured_redis_url
    if cache is None and (explicit_url is None or "CACHE_ALIAS" in raw):
        errors.append(
            Error(
                f"SUPERGRAPH_MESSAGING['CACHE_ALIAS'] is {alias!r}, but CACHES has no such cache.",
                hint="Add a django-redis cache under that alias, set CACHE_ALIAS, or set REDIS_URL.",
                id="supergraph_messaging.E003",
            )
        )
    elif cache is not None and explicit_url is None and not is_redis_backend(str(cache.get("BACKEND", ""))):
        errors.append(
            Error(
                f"CACHES[{alias!r}] is {cache.get('BACKEND')!r}, not a Redis cache, and REDIS_URL is not set.",
                hint="Use 'django_redis.cache.RedisCache' as its BACKEND, or set SUPERGRAPH_MESSAGING['REDIS_URL'].",
                id="supergraph_messaging.E004",
            )
        )
    url = conf.redis_url
    if url is None:
        errors.append(
            Error(
                "No Redis URL could be determined.",
                hint=f"Set SUPERGRAPH_MESSAGING['REDIS_URL'], a LOCATION on CACHES[{alias!r}] "
                "(a Redis cache), or the REDIS_URL environment variable.",
                id="supergraph_messaging.E005",
            )
        )
    elif (problem := url_problem(url)) is not None:
        errors.append(
            Error(
                "SUPERGRAPH_MESSAGING['REDIS_URL'] is not a redis://, rediss://, unix://, redis+sentinel:// "
                "or redis+cluster:// URL." if problem == "" else f"SUPERGRAPH_MESSAGING['REDIS_URL']: {problem}",
                hint=f"Got {url.split('@')[-1]!r} (credentials hidden).",
                id="supergraph_messaging.E006",
            )
        )
    elif urls.is_cluster(url):
        errors += check_cluster_prefix(raw)
    elif conf.sharded_channels:
        errors.append(
            Warning(
                "SUPERGRAPH_MESSAGING['SHARDED_CHANNELS'] has no effect: REDIS_URL is not a Cluster.",
                hint="Sharded Pub/Sub spreads channels over a Cluster's primaries; remove the setting or use "
                     "a redis+cluster:// URL.",
                id="supergraph_messaging.W012",
            )
        )
    errors += check_redis_py()
    return errors


#: The oldest redis-py the app works with (5.0.1 added the asyncio clients' ``aclose``); ``make test-matrix``
#: runs the suite on it.
REDIS_PY_MINIMUM = (5, 0, 1)


#: The oldest redis-py whose asyncio ``PubSub`` has ``ssubscribe``, which SHARDED_CHANNELS on a Cluster needs.
REDIS_PY_SHARDED_MINIMUM = (8, 0, 0)


def check_redis_py() -> list[Any]:
    installed = version(redis.__version__)
    if installed < REDIS_PY_MINIMUM:
        return [
            Error(
                f"redis-py {redis.__version__} is installed; supergraph_messaging needs "
                f"{dotted(REDIS_PY_MINIMUM)} or newer.",
                hint=f"pip install 'redis[hiredis]>={dotted(REDIS_PY_MINIMUM)}'",
                id="supergraph_messaging.E012",
            )
        ]
    url = conf.redis_url
    if conf.sharded_channels and url is not None and urls.is_cluster(url) and installed < REDIS_PY_SHARDED_MINIMUM:
        return [
            Error(
                f"SUPERGRAPH_MESSAGING['SHARDED_CHANNELS'] needs redis-py {dotted(REDIS_PY_SHARDED_MINIMUM)} or "
                f"newer (its asyncio SSUBSCRIBE); redis-py {redis.__version__} is installed.",
                hint=f"pip install 'redis[hiredis]>={dotted(REDIS_PY_SHARDED_MINIMUM)}', or remove SHARDED_CHANNELS.",
                id="supergraph_messaging.E015",
            )
        ]
    return []


def version(text: str) -> tuple[int, ...]:
    """``(major, minor, patch)`` of a release string; a pre-release part counts as 0 (``8.0.0b1`` -> 8.0.0)."""
    parts = [int(digits.group()) if (digits := re.match(r"\d+", part)) else 0 for part in text.split(".")[:3]]
    return tuple(parts + [0] * (3 - len(parts)))


def dotted(version: tuple[int, ...]) -> str:
    return ".".join(map(str, version))


#: The oldest Redis server each option works with, and the commands that make it so.
SERVER_MINIMUM: dict[str, tuple[tuple[int, int], str]] = {
    "DELIVERY = 'durable'": ((6, 2), "XAUTOCLAIM"),
    "SHARDED_CHANNELS": ((7, 0), "SPUBLISH and SSUBSCRIBE"),
}


def server_needs() -> list[tuple[str, tuple[int, int], str]]:
    """(option, oldest Redis server, the commands it needs) for the options configured."""
    url = conf.redis_url
    configured = {
        "DELIVERY = 'durable'": conf.durable,
        "SHARDED_CHANNELS": bool(conf.sharded_channels) and url is not None and urls.is_cluster(url),
    }
    return [(option, *SERVER_MINIMUM[option]) for option, on in configured.items() if on]


@register("supergraph_messaging", Tags.database)
def check_redis_version(app_configs: Any = None, databases: Any = None, **kwargs: Any) -> list[Any]:
    """``manage.py check --database default`` (and ``migrate``): asks Redis its version, and says which
    configured option it is too old for (E011). Not on every command: it connects to Redis."""
    needs = server_needs()
    if not databases or not needs:
        return []
    from supergraph_messaging.redis.client import get_redis_client
    from supergraph_messaging.redis.errors import REDIS_ERRORS

    client = get_redis_client()
    try:
        info: Any = client.redis.info("server")
    except REDIS_ERRORS as exc:
        return [
            Warning(
                f"Could not ask Redis at {client.masked_url} its version: {exc}",
                hint="Start Redis, or check REDIS_URL; these options need a recent enough server: "
                     + ", ".join(f"{option} (Redis {'.'.join(map(str, v))})" for option, v, _ in needs),
                id="supergraph_messaging.W011",
            )
        ]
    # A Cluster answers per node: the oldest node decides.
    versions = [info["redis_version"]] if "redis_version" in info else [n["redis_version"] for n in info.values()]
    oldest = min(versions, key=version)
    return [
        Error(
            f"{option} needs Redis {'.'.join(map(str, minimum))} or newer ({command}); Redis at "
            f"{client.masked_url} is {oldest}.",
            hint="Upgrade Redis, or turn the option off.",
            id="supergraph_messaging.E011",
        )
        for option, minimum, command in needs
        if version(oldest) < minimum
    ]


def check_cluster_prefix(raw: dict[str, Any]) -> list[Any]:
    """A hash tag in ``KEY_PREFIX`` would put every key of the app in one slot, on one node."""
    prefix = raw.get("KEY_PREFIX", "")
    if not isinstance(prefix, str) or hash_tag(prefix) is None:
        return []
    return [
        Error(
            f"SUPERGRAPH_MESSAGING['KEY_PREFIX'] = {prefix!r} holds a Cluster hash tag: every key of the app "
            "would live in one slot, on one node.",
            hint="Remove the braces from KEY_PREFIX (tag individual keys instead, e.g. 'user:{42}:cart').",
            id="supergraph_messaging.E010",
        )
    ]


def url_problem(url: str) -> str | None:
    """None for a usable URL; else what is wrong with it ("" when it is no Redis URL at all)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return ""
    if parts.scheme == "unix":
        return None if parts.path else ""
    if urls.is_sentinel(url) or urls.is_cluster(url):
        try:
            urls.parse(url)
        except MessagingError as exc:
            return str(exc)
        return None
    if parts.scheme not in ("redis", "rediss"):
        return ""
    try:
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError:
        return ""
    return None if parts.hostname else ""
