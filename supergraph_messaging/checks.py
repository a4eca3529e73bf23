"""System checks: misconfiguration is reported by ``manage.py check``, never at import."""

from __future__ import annotations

import difflib
import importlib.util
import re
from typing import Any
from urllib.parse import urlsplit

import redis
from django.conf import settings
from django.core.checks import Error, Tags, Warning, register
from django.utils.module_loading import import_string

from . import topology
from .conf import SETTINGS, conf, is_redis_backend
from .exceptions import MessagingError
from .keys import hash_tag


@register("supergraph_messaging")
def check_settings(app_configs: Any = None, **kwargs: Any) -> list[Any]:
    """Every key of ``SUPERGRAPH_MESSAGING``, validated from its declaration in ``conf.SETTINGS``."""
    raw = getattr(settings, "SUPERGRAPH_MESSAGING", None)
    if raw is None:
        return _check_misspelt_setting_name()
    if not isinstance(raw, dict):
        return [
            Error(
                "SUPERGRAPH_MESSAGING must be a dict.",
                hint=f"Got {type(raw).__name__}.",
                id="supergraph_messaging.E001",
            )
        ]
    errors: list[Any] = []
    for key in conf.unknown_keys:
        close = difflib.get_close_matches(str(key), SETTINGS, n=1)
        errors.append(
            Error(
                f"Unknown key SUPERGRAPH_MESSAGING[{key!r}].",
                hint=(f"Did you mean {close[0]!r}? " if close else "") + "Known keys: " + ", ".join(sorted(SETTINGS)),
                id="supergraph_messaging.E002",
            )
        )
    for name, spec, value in conf.invalid_values():
        errors.append(
            Error(
                f"SUPERGRAPH_MESSAGING[{name!r}] must be {spec.expected}.",
                hint=f"Got {value!r}.",
                id=spec.check_id,
            )
        )
    errors += _check_redis_location(raw)
    if conf.durable and not conf.service_name:
        errors.append(
            Error(
                "SUPERGRAPH_MESSAGING['DELIVERY'] is 'durable' but SERVICE_NAME is not set.",
                hint="Name this service (e.g. 'events'): its consumer groups are named after it.",
                id="supergraph_messaging.E301",
            )
        )
    errors += _check_token_authenticator()
    if conf.schema_access == "token" and not conf.service_token:
        errors.append(
            Warning(
                "SUPERGRAPH_MESSAGING['SCHEMA_ACCESS'] is 'token' but SERVICE_TOKEN is not set: "
                "nobody can read /__schema and /__asyncapi.",
                hint="Set SERVICE_TOKEN (the same secret on every service and the gateway), or use 'staff'.",
                id="supergraph_messaging.W014",
            )
        )
    errors += _check_gateway()
    prefix = raw.get("KEY_PREFIX", "")
    if isinstance(prefix, str) and any(c in prefix for c in "*?[]"):
        errors.append(
            Warning(
                "KEY_PREFIX contains glob characters; pattern invalidation escapes them.",
                id="supergraph_messaging.W001",
            )
        )
    return errors


def _check_gateway() -> list[Any]:
    if not conf.gateway_services:
        return []
    errors: list[Any] = []
    services = conf.gateway_services
    missing = [name for name in services if not conf.token_for(name)]
    if missing:
        errors.append(Error(
            f"SUPERGRAPH_MESSAGING['GATEWAY_SERVICES'] is set but SERVICE_TOKEN has no token for "
            f"{', '.join(map(repr, missing))}: the gateway cannot read their /__schema or ask their /__authorize, "
            "so it serves none of their entities.",
            hint="Set SERVICE_TOKEN to {service name: the secret that service has}.",
            id="supergraph_messaging.E013",
        ))
    elif len(services) > 1 and isinstance(conf.service_token, str):
        errors.append(Warning(
            "SUPERGRAPH_MESSAGING['SERVICE_TOKEN'] is one secret for every service behind this gateway: any of "
            "them can then sign user assertions the others accept and read their /__schema as the gateway.",
            hint="Give each service its own: SERVICE_TOKEN = {service name: its secret}.",
            id="supergraph_messaging.W015",
        ))
    loose = [name for name, entry in services.items() if entry.entities is None or entry.channels is None]
    if loose:
        errors.append(Warning(
            f"GATEWAY_SERVICES gives {', '.join(map(repr, loose))} no 'entities' or no 'channels': such a service "
            "gets whatever entities and exact channels it describes before any other service does.",
            hint="{'url': ..., 'entities': [its entities], 'channels': [its channel prefixes, like 'billing.']}.",
            id="supergraph_messaging.W016",
        ))
    if importlib.util.find_spec("httpx") is None:
        errors.append(Error(
            "SUPERGRAPH_MESSAGING['GATEWAY_SERVICES'] is set but httpx is not installed: the gateway talks to "
            "its services over HTTP with it.",
            hint="pip install 'supergraph-messaging[gateway]' (or httpx).",
            id="supergraph_messaging.E014",
        ))
    return errors


def _check_misspelt_setting_name() -> list[Any]:
    """``SUPERGRAPH_MESSAGINGS = {...}`` would otherwise be ignored in silence."""
    names = [n for n in dir(settings) if n.isupper() and n != "SUPERGRAPH_MESSAGING"]
    close = difflib.get_close_matches("SUPERGRAPH_MESSAGING", names, n=1, cutoff=0.8)
    if not close:
        return []
    return [
        Warning(
            f"settings.{close[0]} looks like a misspelling of SUPERGRAPH_MESSAGING, which is not set.",
            hint="Rename it to SUPERGRAPH_MESSAGING; until then every setting has its default.",
            id="supergraph_messaging.W002",
        )
    ]


def _check_redis_location(raw: dict[str, Any]) -> list[Any]:
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
    elif (problem := _url_problem(url)) is not None:
        errors.append(
            Error(
                "SUPERGRAPH_MESSAGING['REDIS_URL'] is not a redis://, rediss://, unix://, redis+sentinel:// "
                "or redis+cluster:// URL." if problem == "" else f"SUPERGRAPH_MESSAGING['REDIS_URL']: {problem}",
                hint=f"Got {url.split('@')[-1]!r} (credentials hidden).",
                id="supergraph_messaging.E006",
            )
        )
    elif topology.is_cluster(url):
        errors += _check_cluster_prefix(raw)
        from . import near

        if near._prefixes:
            errors.append(
                Warning(
                    "local=True (the near cache) has no effect on a Redis Cluster yet: those reads go to Redis.",
                    hint="Tracking is per node on a Cluster; use one node or Sentinel for the near cache.",
                    id="supergraph_messaging.W013",
                )
            )
    elif conf.sharded_channels:
        errors.append(
            Warning(
                "SUPERGRAPH_MESSAGING['SHARDED_CHANNELS'] has no effect: REDIS_URL is not a Cluster.",
                hint="Sharded Pub/Sub spreads channels over a Cluster's primaries; remove the setting or use "
                     "a redis+cluster:// URL.",
                id="supergraph_messaging.W012",
            )
        )
    errors += _check_redis_py()
    return errors


#: The oldest redis-py the app works with (5.0.1 added the asyncio clients' ``aclose``); ``make test-matrix``
#: runs the suite on it.
REDIS_PY_MINIMUM = (5, 0, 1)
#: The oldest redis-py whose asyncio ``PubSub`` has ``ssubscribe``, which SHARDED_CHANNELS on a Cluster needs.
REDIS_PY_SHARDED_MINIMUM = (8, 0, 0)


def _check_redis_py() -> list[Any]:
    installed = _version(redis.__version__)
    if installed < REDIS_PY_MINIMUM:
        return [
            Error(
                f"redis-py {redis.__version__} is installed; supergraph_messaging needs "
                f"{_dotted(REDIS_PY_MINIMUM)} or newer.",
                hint=f"pip install 'redis[hiredis]>={_dotted(REDIS_PY_MINIMUM)}'",
                id="supergraph_messaging.E012",
            )
        ]
    url = conf.redis_url
    if conf.sharded_channels and url is not None and topology.is_cluster(url) and installed < REDIS_PY_SHARDED_MINIMUM:
        return [
            Error(
                f"SUPERGRAPH_MESSAGING['SHARDED_CHANNELS'] needs redis-py {_dotted(REDIS_PY_SHARDED_MINIMUM)} or "
                f"newer (its asyncio SSUBSCRIBE); redis-py {redis.__version__} is installed.",
                hint=f"pip install 'redis[hiredis]>={_dotted(REDIS_PY_SHARDED_MINIMUM)}', or remove SHARDED_CHANNELS.",
                id="supergraph_messaging.E015",
            )
        ]
    return []


def _version(text: str) -> tuple[int, ...]:
    """``(major, minor, patch)`` of a release string; a pre-release part counts as 0 (``8.0.0b1`` -> 8.0.0)."""
    parts = [int(digits.group()) if (digits := re.match(r"\d+", part)) else 0 for part in text.split(".")[:3]]
    return tuple(parts + [0] * (3 - len(parts)))


def _dotted(version: tuple[int, ...]) -> str:
    return ".".join(map(str, version))


#: The oldest Redis server each option works with, and the commands that make it so.
SERVER_MINIMUM: dict[str, tuple[tuple[int, int], str]] = {
    "DELIVERY = 'durable'": ((6, 2), "XAUTOCLAIM"),
    "SHARDED_CHANNELS": ((7, 0), "SPUBLISH and SSUBSCRIBE"),
}


def _server_needs() -> list[tuple[str, tuple[int, int], str]]:
    """(option, oldest Redis server, the commands it needs) for the options configured."""
    url = conf.redis_url
    configured = {
        "DELIVERY = 'durable'": conf.durable,
        "SHARDED_CHANNELS": bool(conf.sharded_channels) and url is not None and topology.is_cluster(url),
    }
    return [(option, *SERVER_MINIMUM[option]) for option, on in configured.items() if on]


@register("supergraph_messaging", Tags.database)
def check_redis_version(app_configs: Any = None, databases: Any = None, **kwargs: Any) -> list[Any]:
    """``manage.py check --database default`` (and ``migrate``): asks Redis its version, and says which
    configured option it is too old for (E011). Not on every command: it connects to Redis."""
    needs = _server_needs()
    if not databases or not needs:
        return []
    from .connection import REDIS_ERRORS, get_redis_client

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
    oldest = min(versions, key=_version)
    return [
        Error(
            f"{option} needs Redis {'.'.join(map(str, minimum))} or newer ({command}); Redis at "
            f"{client.masked_url} is {oldest}.",
            hint="Upgrade Redis, or turn the option off.",
            id="supergraph_messaging.E011",
        )
        for option, minimum, command in needs
        if _version(oldest) < minimum
    ]


def _check_cluster_prefix(raw: dict[str, Any]) -> list[Any]:
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


def _check_token_authenticator() -> list[Any]:
    path = conf.ws_token_authenticator
    if not path:
        return []
    try:
        func = import_string(path)
    except ImportError as exc:
        problem = f"cannot be imported: {exc}"
    else:
        if callable(func):
            return []
        problem = f"is a {type(func).__name__}, not a callable"
    return [
        Error(
            f"SUPERGRAPH_MESSAGING['WS_TOKEN_AUTHENTICATOR'] = {path!r} {problem}.",
            hint="Give the dotted path of a function taking the token and returning a user or None.",
            id="supergraph_messaging.E009",
        )
    ]


def _url_problem(url: str) -> str | None:
    """None for a usable URL; else what is wrong with it ("" when it is no Redis URL at all)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return ""
    if parts.scheme == "unix":
        return None if parts.path else ""
    if topology.is_sentinel(url) or topology.is_cluster(url):
        try:
            topology.parse(url)
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
    from .subscriptions import registry

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


@register("supergraph_messaging", deploy=True)
def check_deploy(app_configs: Any = None, **kwargs: Any) -> list[Any]:
    """``manage.py check --deploy``: production settings that leave /subscribe looser than it can be."""
    if conf.ws_allowed_origins is not None:
        return []
    return [
        Warning(
            "SUPERGRAPH_MESSAGING['WS_ALLOWED_ORIGINS'] is not set: /subscribe accepts an Origin of any "
            "scheme and port whose host is in ALLOWED_HOSTS.",
            hint="List the exact origins of your pages, e.g. ['https://app.example.com'].",
            id="supergraph_messaging.W003",
        )
    ]


@register("supergraph_messaging")
def check_durable(app_configs: Any = None, **kwargs: Any) -> list[Any]:
    """Durable delivery: what it cannot make durable (W301 model-signal events outside atomic(),
    W302 handlers on glob channels, W303 SQLite transactions that fail under the relay)."""
    if not conf.durable:
        return []
    from .events import _model_events
    from .keys import is_glob
    from .pubsub import get_global_subscriber

    warnings: list[Any] = []
    databases = getattr(settings, "DATABASES", {})
    if _model_events and not all(db.get("ATOMIC_REQUESTS") for db in databases.values()):
        warnings.append(Warning(
            "register_model_events writes its outbox rows in post_save/post_delete: outside atomic() "
            "(no ATOMIC_REQUESTS) the change and its event commit separately, and a crash between them "
            "loses the event.",
            hint="Set ATOMIC_REQUESTS, or wrap changes made outside the API in transaction.atomic().",
            id="supergraph_messaging.W301",
        ))
    for alias, db in databases.items():
        if "sqlite" in str(db.get("ENGINE", "")) and (db.get("OPTIONS") or {}).get("transaction_mode") != "IMMEDIATE":
            warnings.append(Warning(
                f"DATABASES[{alias!r}] is SQLite without transaction_mode 'IMMEDIATE': the outbox relay and "
                "the web's transactions (a read, then the change and its outbox row) each take the write "
                "lock late, and one of two fails at once with 'database is locked'.",
                hint=f"Set DATABASES[{alias!r}]['OPTIONS'] to include 'transaction_mode': 'IMMEDIATE' (and "
                     "'init_command': 'PRAGMA journal_mode=WAL', so that reads wait for no writer), or use "
                     "PostgreSQL.",
                id="supergraph_messaging.W303",
            ))
    globs = sorted(c for c in get_global_subscriber().channels if is_glob(c))
    if globs:
        warnings.append(Warning(
            f"Handlers on glob channels stay at-most-once with DELIVERY='durable': {', '.join(globs)}.",
            hint="Subscribe to exact channels for durable delivery.",
            id="supergraph_messaging.W302",
        ))
    return warnings
