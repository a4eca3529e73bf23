"""System checks: misconfiguration is reported by ``manage.py check``, never at import."""

from __future__ import annotations

import difflib
import importlib.util
from typing import Any

from django.conf import settings
from django.core.checks import Error, Warning, register
from django.utils.module_loading import import_string

from supergraph_messaging.conf import SETTINGS, conf
from supergraph_messaging.redis import urls
from supergraph_messaging.redis.checks import check_location, url_problem


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
    errors += check_location(raw)
    errors += _check_near_cache()
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


def _check_near_cache() -> list[Any]:
    """``local=True`` on a Cluster: the near cache tracks one node, so it stays off there."""
    from supergraph_messaging.cache import near

    url = conf.redis_url
    if not near._prefixes or url is None or url_problem(url) is not None or not urls.is_cluster(url):
        return []
    return [
        Warning(
            "local=True (the near cache) has no effect on a Redis Cluster yet: those reads go to Redis.",
            hint="Tracking is per node on a Cluster; use one node or Sentinel for the near cache.",
            id="supergraph_messaging.W013",
        )
    ]


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


@register("supergraph_messaging")
def check_event_viewsets(app_configs: Any = None, **kwargs: Any) -> list[Any]:
    """Run each events-publishing ViewSet's own checks (E101, E102)."""
    from django.urls import get_resolver

    from supergraph_messaging.events.config import registry

    get_resolver().url_patterns  # noqa: B018 - imports the views, registering their ViewSets
    errors: list[Any] = []
    for registration in registry:
        if registration.viewset is not None:
            errors.extend(registration.viewset.check_events())
    return errors


@register("supergraph_messaging")
def check_subscriptions(app_configs: Any = None, **kwargs: Any) -> list[Any]:
    """Subscriptions: known operators only (E201), one class per entity (E202)."""
    from supergraph_messaging.realtime.subscriptions import registry

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
    """Durable delivery: what it cannot make durable (W302 handlers on glob channels, W303 SQLite
    transactions that fail under the relay)."""
    if not conf.durable:
        return []
    from supergraph_messaging.delivery.subscriber import get_global_subscriber
    from supergraph_messaging.redis.keys import is_glob

    warnings: list[Any] = []
    databases = getattr(settings, "DATABASES", {})
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


@register("supergraph_messaging", deploy=True)
def check_durable_deploy(app_configs: Any = None, **kwargs: Any) -> list[Any]:
    """``check --deploy``, durable delivery: W301, model-signal events outside ``atomic()``. A choice to
    review before deploying, not a mistake, so it is not repeated by every management command."""
    from supergraph_messaging.events.model_signals import _model_events

    databases = getattr(settings, "DATABASES", {})
    if not conf.durable or not _model_events or all(db.get("ATOMIC_REQUESTS") for db in databases.values()):
        return []
    return [Warning(
        "register_model_events writes its outbox rows in post_save/post_delete: outside atomic() "
        "(no ATOMIC_REQUESTS) the change and its event commit separately, and a crash between them "
        "loses the event.",
        hint="Set ATOMIC_REQUESTS, or wrap changes made outside the API in transaction.atomic().",
        id="supergraph_messaging.W301",
    )]
