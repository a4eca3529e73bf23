"""Settings: each key of ``SUPERGRAPH_MESSAGING`` declared once, with its default and validator.

The typed properties of :class:`Settings` and the system checks are both
derived from :data:`SETTINGS`, so a setting cannot be added without being
checked. Values are read live (``override_settings`` works); a value that
fails its validator at run time is replaced by the default and logged once,
so a bad setting that slipped past ``manage.py check`` degrades instead of
breaking every call.
"""

from __future__ import annotations

import logging
import math
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from django.conf import settings
from django.core.signals import setting_changed
from django.dispatch import receiver

logger = logging.getLogger("supergraph_messaging.conf")


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


@dataclass(frozen=True)
class Setting:
    """One key: its default, what a valid value is (in words and as a predicate), the check id."""

    default: Any
    expected: str
    valid: Callable[[Any], bool]
    check_id: str = "supergraph_messaging.E007"
    doc: str = ""


NUMBER = "a positive number (seconds)"

SETTINGS: dict[str, Setting] = {
    "REDIS_URL": Setting(None, "a redis://, rediss://, unix://, redis+sentinel:// or redis+cluster:// URL, or None",
                         is_optional_str,
                         doc="None: the LOCATION of CACHES[CACHE_ALIAS], else $REDIS_URL."),
    "CACHE_ALIAS": Setting("default", "the name of a cache in CACHES", is_str,
                           doc="A django-redis cache whose connection pool sync calls reuse."),
    "KEY_PREFIX": Setting("", "a string", is_str, "supergraph_messaging.E008",
                          doc="Prepended to every cache key."),
    "CHANNEL_PREFIX": Setting("", "a string", is_str, "supergraph_messaging.E008",
                              doc="Prepended to every Pub/Sub channel."),
    "DEFAULT_TTL": Setting(3600, "a positive integer (seconds) or None", is_optional_positive_int,
                           doc="TTL of cache values when none is given; None never expires."),
    "LEASE_TTL": Setting(10.0, "a number of seconds, at least 0.001 (leases are set in milliseconds)",
                         is_at_least_a_millisecond,
                         doc="How long a cache fill may hold its lease."),
    "BREAKER_INTERVAL": Setting(0.5, NUMBER, is_positive_number,
                                doc="How often the open circuit breaker probes Redis on a connection of its own."),
    "SOCKET_TIMEOUT": Setting(1.0, NUMBER, is_positive_number,
                              doc="Socket timeout of the connections this app creates."),
    "SOCKET_CONNECT_TIMEOUT": Setting(0.5, NUMBER, is_positive_number,
                                      doc="Connect timeout of the connections this app creates."),
    "PUBLISH_IN_BACKGROUND": Setting(True, "True or False", is_bool,
                                     doc="After commit, send events without waiting for Redis's reply; "
                                         "False: each request waits for its round trip."),
    "PUBLISH_QUEUE_SIZE": Setting(10_000, "a positive integer", is_positive_int,
                                  doc="Events per thread sent but not yet confirmed by Redis; beyond it they "
                                      "are dropped and counted (requests never wait)."),
    "DELIVERY": Setting("pubsub", "'pubsub' or 'durable'", lambda v: v in ("pubsub", "durable"),
                        doc="'durable': events go through the outbox table and a Redis Stream per channel."),
    "SERVICE_NAME": Setting(None, "a service name (letters, digits, '.', '_', '-') or None",
                            lambda v: v is None or (isinstance(v, str) and bool(re.fullmatch(r"[\w.-]+", v))),
                            doc="Names this service's consumer groups; required with DELIVERY='durable'."),
    "STREAM_MAXLEN": Setting(10_000, "a positive integer", is_positive_int,
                             doc="Entries of history kept per channel stream for resumes (approximately); "
                                 "entries a consumer group has not acknowledged are kept as well."),
    "STREAM_HARD_MAXLEN": Setting(1_000_000, "a positive integer", is_positive_int,
                                  doc="A channel stream is cut to this many entries even past consumer groups "
                                      "that have not acknowledged them (logged at ERROR, counted, new epoch)."),
    "OUTBOX_RETENTION": Setting(86_400, "a positive integer (seconds)", is_positive_int,
                                doc="Relayed outbox rows are deleted after this long; unrelayed rows never."),
    "RELAY_BATCH": Setting(500, "a positive integer", is_positive_int,
                           doc="Outbox rows one relay round takes."),
    "RELAY_POLL_INTERVAL": Setting(0.5, NUMBER, is_positive_number,
                                   doc="How often the relay looks for rows nobody relayed (a crash, an outage)."),
    "NEAR_CACHE_SIZE": Setting(10_000, "a positive integer", is_positive_int,
                               doc="Values each process keeps in its near cache (local=True), least recently "
                                   "used dropped first."),
    "SHARDED_CHANNELS": Setting(None, "None or a list of glob patterns", is_optional_str_list,
                                doc="On a Cluster, exact channels matching one of these use sharded Pub/Sub "
                                    "(SPUBLISH/SSUBSCRIBE on their slot's node); glob subscriptions never see "
                                    "them. Redis >= 7."),
    "DURABLE_REPLICAS": Setting(None, "None or a non-negative integer", is_optional_non_negative_int,
                                doc="Replicas a relayed event must reach (WAIT) before its outbox row counts "
                                    "as relayed; while fewer are connected, rows stay in the outbox. 0: do "
                                    "not wait; None: 1 behind Sentinel, else 0."),
    "MAX_DELIVERIES": Setting(5, "a positive integer", is_positive_int,
                              doc="Attempts at a durable event before it goes to the dead-letter stream."),
    "CLAIM_IDLE": Setting(60.0, NUMBER, is_positive_number,
                          doc="A durable event another consumer received and has not acknowledged for this long "
                              "(it died) is claimed and handled here."),
    "WS_RECOVERY_MAX": Setting(300, "a positive integer", is_positive_int,
                               doc="Most missed events a WebSocket resume replays; beyond it: recovered false."),
    "WS_RECOVERY_MAX_BYTES": Setting(4 * 1024 * 1024, "a positive integer", is_positive_int,
                                     doc="Most payload bytes a WebSocket resume (or the hub's reconnect) reads "
                                         "per channel; beyond it: recovered false. Each 64 KiB read costs the "
                                         "connection one message of WS_MAX_MESSAGES_PER_SECOND."),
    "ADMIN_KEY_PATTERNS": Setting(None, "None or a list of glob patterns", is_optional_str_list,
                                  doc="Keys the admin cache browser may show besides KEY_PREFIX and the "
                                      "registered templates (session keys never)."),
    "WORKER_QUEUE_SIZE": Setting(100_000, "a positive integer", is_positive_int,
                                 doc="Messages a subscriber holds for its handlers; beyond it they are dropped "
                                     "and logged with the channel."),
    "HANDLER_CONCURRENCY": Setting(4, "a positive integer", is_positive_int,
                                   doc="Sync handlers running at once (each channel keeps its order)."),
    "HANDLER_TIMEOUT": Setting(None, "a positive number (seconds) or None", is_optional_positive_number,
                               doc="Stop waiting for a handler after this long; None: wait."),
    "SHUTDOWN_TIMEOUT": Setting(30.0, NUMBER, is_positive_number,
                                doc="On SIGTERM, how long messages already received may take to finish."),
    "WS_MAX_SUBSCRIPTIONS": Setting(50, "a positive integer", is_positive_int,
                                    doc="Subscriptions per WebSocket connection."),
    "WS_MAX_MESSAGE_BYTES": Setting(65536, "a positive integer", is_positive_int,
                                    doc="Largest client frame."),
    "WS_MAX_IN_VALUES": Setting(100, "a positive integer", is_positive_int,
                                doc="Longest list of an `in` filter."),
    "WS_QUEUE_SIZE": Setting(1000, "a positive integer", is_positive_int,
                             doc="Outgoing frames queued per connection before 4008."),
    "WS_INIT_TIMEOUT": Setting(10.0, NUMBER, is_positive_number,
                               doc="Time for connection_init before 4408."),
    "WS_MAX_MESSAGES_PER_SECOND": Setting(100, "a positive integer", is_positive_int,
                                          doc="Client frames per second before 4429."),
    "WS_PING_INTERVAL": Setting(20.0, "a number of seconds >= 0, or None (never ping)", is_optional_non_negative,
                                doc="Server ping interval; 0 or None: never."),
    "WS_PONG_TIMEOUT": Setting(20.0, NUMBER, is_positive_number,
                               doc="No pong within this closes with 4008."),
    "WS_MAX_BUFFERED_BYTES": Setting(4 * 1024 * 1024, "a positive integer", is_positive_int,
                                     doc="Bytes sent to a connection and not yet acknowledged by a pong; "
                                         "over it: 4008 (needs pings: WS_PING_INTERVAL > 0)."),
    "WS_MAX_EVENT_BYTES": Setting(256 * 1024, "a positive integer", is_positive_int,
                                  doc="Largest event delivered over a WebSocket; a larger one becomes a gap."),
    "WS_MAX_FIELDS": Setting(100, "a positive integer", is_positive_int,
                             doc="Most names in a subscription's `fields`."),
    "WS_AUTH_RECHECK_INTERVAL": Setting(60.0, "a number of seconds >= 0 (0 or None: only on subscribe)",
                                        is_optional_non_negative,
                                        doc="How often an open connection's user is checked again (0: only on "
                                            "subscribe)."),
    "WS_ALLOWED_ORIGINS": Setting(None, "None or a list of origins like 'https://app.example.com:8443'",
                                  is_optional_origin_list,
                                  doc="Exact origins allowed on /subscribe; None: any origin whose host is "
                                      "in ALLOWED_HOSTS."),
    "SCHEMA_ACCESS": Setting("staff", "'public', 'staff' or 'token'", lambda v: v in ("public", "staff", "token"),
                             doc="Who may read /__schema and /__asyncapi: anyone, staff users (or a caller "
                                 "with SERVICE_TOKEN), or only a caller with SERVICE_TOKEN."),
    "SERVICE_TOKEN": Setting(None, "a string of at least 32 characters, a dict of service name -> such a "
                                   "string (on a gateway), or None", is_service_token,
                             doc="The secret this service shares with its gateway, sent as 'Authorization: "
                                 "Service <token>' and the key of the gateway's signed user assertions; on a "
                                 "gateway, one per service."),
    "GATEWAY_SERVICES": Setting(None, "None or a dict of service name -> base URL ('http://events:8002') or "
                                      "{'url': ..., 'entities': [...], 'channels': [channel prefixes]}",
                                is_service_map,
                                doc="Gateway mode: serve these services' subscriptions at this /subscribe (each "
                                    "service decides who may subscribe, through POST /__authorize), each only "
                                    "with the entities and channel prefixes given."),
    "GATEWAY_REFRESH_INTERVAL": Setting(30.0, NUMBER, is_positive_number,
                                        doc="How often a gateway reads each service's /__schema again (a service "
                                            "that did not answer: sooner, backing off up to this)."),
    "GATEWAY_TIMEOUT": Setting(2.0, NUMBER, is_positive_number,
                               doc="How long a gateway waits for a service's /__schema or /__authorize, "
                                   "in all (connect, headers and body)."),
    "GATEWAY_MAX_SCHEMA_BYTES": Setting(1024 * 1024, "a positive integer", is_positive_int,
                                        doc="Largest /__schema a gateway reads from a service; a larger one "
                                            "leaves the service unavailable."),
    "GATEWAY_MAX_ENTITIES": Setting(500, "a positive integer", is_positive_int,
                                    doc="Most entities a gateway takes from one service's /__schema; more "
                                        "leaves the service unavailable."),
    "WS_TOKEN_AUTHENTICATOR": Setting(None, "a dotted path to callable(token) -> user or None, or None",
                                      is_optional_str, doc="Resolves connection_init.payload.token."),
}

DEFAULTS: dict[str, Any] = {name: spec.default for name, spec in SETTINGS.items()}


class Settings:
    """Typed access to ``SUPERGRAPH_MESSAGING``.

    Values are memoised because they sit on the cache-hit path, and the memo
    is dropped on Django's ``setting_changed`` (sent by ``override_settings``),
    so overrides still take effect at once.
    """

    def __init__(self) -> None:
        self._memo: dict[str, Any] = {}
        self._reported: set[tuple[str, str]] = set()

    @property
    def _user(self) -> dict[str, Any]:
        if not settings.configured:  # a plain asyncio script using url= (the seed's services)
            return {}
        value = getattr(settings, "SUPERGRAPH_MESSAGING", None)
        return value if isinstance(value, dict) else {}

    def _get(self, name: str) -> Any:
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

    @property
    def unknown_keys(self) -> list[str]:
        return sorted(set(self._user) - set(SETTINGS))

    def invalid_values(self) -> list[tuple[str, Setting, Any]]:
        """(name, spec, value) of every set value its validator rejects."""
        user = self._user
        return [(name, spec, user[name]) for name, spec in SETTINGS.items()
                if name in user and not spec.valid(user[name])]

    @property
    def configured_redis_url(self) -> str | None:
        url: str | None = self._get("REDIS_URL")
        return url

    @property
    def cache_alias(self) -> str:
        alias: str = self._get("CACHE_ALIAS")
        return alias

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
    def publish_queue_size(self) -> int:
        return int(self._get("PUBLISH_QUEUE_SIZE"))

    @property
    def delivery(self) -> str:
        mode: str = self._get("DELIVERY")
        return mode

    @property
    def durable(self) -> bool:
        return self.delivery == "durable"

    @property
    def service_name(self) -> str | None:
        name: str | None = self._get("SERVICE_NAME")
        return name

    @property
    def stream_maxlen(self) -> int:
        return int(self._get("STREAM_MAXLEN"))

    @property
    def stream_hard_maxlen(self) -> int:
        return int(self._get("STREAM_HARD_MAXLEN"))

    @property
    def outbox_retention(self) -> int:
        return int(self._get("OUTBOX_RETENTION"))

    @property
    def relay_batch(self) -> int:
        return int(self._get("RELAY_BATCH"))

    @property
    def relay_poll_interval(self) -> float:
        return float(self._get("RELAY_POLL_INTERVAL"))

    @property
    def near_cache_size(self) -> int:
        return int(self._get("NEAR_CACHE_SIZE"))

    @property
    def sharded_channels(self) -> tuple[str, ...]:
        return tuple(self._get("SHARDED_CHANNELS") or ())

    @property
    def durable_replicas(self) -> int:
        """``DURABLE_REPLICAS``; unset, 1 behind Sentinel (which implies a replica to promote), else 0."""
        value = self._get("DURABLE_REPLICAS")
        if value is None:
            return 1 if "sentinel" in urlsplit(self.redis_url or "").scheme else 0
        return int(value)

    @property
    def max_deliveries(self) -> int:
        return int(self._get("MAX_DELIVERIES"))

    @property
    def claim_idle(self) -> float:
        return float(self._get("CLAIM_IDLE"))

    @property
    def ws_recovery_max(self) -> int:
        return int(self._get("WS_RECOVERY_MAX"))

    @property
    def ws_recovery_max_bytes(self) -> int:
        return int(self._get("WS_RECOVERY_MAX_BYTES"))

    @property
    def admin_key_patterns(self) -> tuple[str, ...]:
        return tuple(self._get("ADMIN_KEY_PATTERNS") or ())

    @property
    def worker_queue_size(self) -> int:
        return int(self._get("WORKER_QUEUE_SIZE"))

    @property
    def handler_concurrency(self) -> int:
        return int(self._get("HANDLER_CONCURRENCY"))

    @property
    def handler_timeout(self) -> float | None:
        timeout = self._get("HANDLER_TIMEOUT")
        return None if timeout is None else float(timeout)

    @property
    def shutdown_timeout(self) -> float:
        return float(self._get("SHUTDOWN_TIMEOUT"))

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
    def ws_max_buffered_bytes(self) -> int:
        return int(self._get("WS_MAX_BUFFERED_BYTES"))

    @property
    def ws_max_event_bytes(self) -> int:
        return int(self._get("WS_MAX_EVENT_BYTES"))

    @property
    def ws_max_fields(self) -> int:
        return int(self._get("WS_MAX_FIELDS"))

    @property
    def ws_auth_recheck_interval(self) -> float:
        return float(self._get("WS_AUTH_RECHECK_INTERVAL") or 0)

    @property
    def ws_allowed_origins(self) -> tuple[str, ...] | None:
        origins = self._get("WS_ALLOWED_ORIGINS")
        return None if origins is None else tuple(o.rstrip("/").lower() for o in origins)

    @property
    def schema_access(self) -> str:
        return str(self._get("SCHEMA_ACCESS"))

    @property
    def service_token(self) -> str | None:
        """This service's own token (None on a gateway that has one per service)."""
        token = self._get("SERVICE_TOKEN")
        return token if isinstance(token, str) else None

    def token_for(self, service: str) -> str | None:
        """The token a gateway uses with ``service``: its own entry, or the one shared token."""
        token = self._get("SERVICE_TOKEN")
        return token.get(service) if isinstance(token, dict) else token

    @property
    def gateway_services(self) -> dict[str, ServiceEntry]:
        raw = self._get("GATEWAY_SERVICES") or {}
        cached = self._memo.get("GATEWAY_SERVICES:parsed")  # read per connection: parsed once
        if cached is None or cached[0] is not raw:
            parsed = {name: ServiceEntry(entry) if isinstance(entry, str) else ServiceEntry(
                entry["url"],
                tuple(entry["entities"]) if entry.get("entities") is not None else None,
                tuple(entry["channels"]) if entry.get("channels") is not None else None)
                for name, entry in raw.items()}
            cached = self._memo["GATEWAY_SERVICES:parsed"] = (raw, parsed)
        services: dict[str, ServiceEntry] = cached[1]
        return services

    @property
    def gateway_max_schema_bytes(self) -> int:
        return int(self._get("GATEWAY_MAX_SCHEMA_BYTES"))

    @property
    def gateway_max_entities(self) -> int:
        return int(self._get("GATEWAY_MAX_ENTITIES"))

    @property
    def gateway_refresh_interval(self) -> float:
        return float(self._get("GATEWAY_REFRESH_INTERVAL"))

    @property
    def gateway_timeout(self) -> float:
        return float(self._get("GATEWAY_TIMEOUT"))

    @property
    def ws_token_authenticator(self) -> str | None:
        path: str | None = self._get("WS_TOKEN_AUTHENTICATOR")
        return path


def is_django_redis_backend(backend: str) -> bool:
    return backend.startswith("django_redis.")


DJANGO_REDIS_CACHE = "django.core.cache.backends.redis.RedisCache"


def is_redis_backend(backend: str) -> bool:
    """django-redis, or Django's own ``RedisCache`` (whose LOCATION we can use, not its pool)."""
    return is_django_redis_backend(backend) or backend == DJANGO_REDIS_CACHE


conf = Settings()


@receiver(setting_changed)
def _clear_memo(setting: str, **kwargs: Any) -> None:
    if setting in ("SUPERGRAPH_MESSAGING", "CACHES"):
        conf.clear()
