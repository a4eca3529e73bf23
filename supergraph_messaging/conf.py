"""Settings: each key of ``SUPERGRAPH_MESSAGING`` declared once, with its default and validator.

Each key is a :class:`Setting` attribute of :class:`Settings`: a typed,
memoised property. :data:`SETTINGS`, the system checks and
``docs/settings.md`` are derived from those declarations, so a setting
cannot be added without being checked and documented. Values are read live (``override_settings`` works); a value that
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
from typing import Any, Generic, TypeVar, overload
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


_T = TypeVar("_T")


class Setting(Generic[_T]):
    """One key of ``SUPERGRAPH_MESSAGING``: its default, what a valid value is (in words and as a predicate),
    its check id and documentation, and how it reads as a Python value (``convert``).

    Declared once, as an attribute of :class:`Settings`, which it serves as a
    typed, memoised property; :data:`SETTINGS`, the system checks and
    ``docs/settings.md`` are all derived from those declarations.
    """

    def __init__(self, default: Any, expected: str, valid: Callable[[Any], bool],
                 check_id: str = "supergraph_messaging.E007", doc: str = "", *,
                 convert: Callable[[Any], _T], key: str = "") -> None:
        self.default = default
        self.expected = expected
        self.valid = valid
        self.check_id = check_id
        self.doc = doc
        self.convert = convert
        self.key = key
        self.attr = ""

    def __set_name__(self, owner: type, name: str) -> None:
        self.attr = name
        self.key = self.key or name.upper()

    @overload
    def __get__(self, obj: None, owner: type) -> Setting[_T]: ...

    @overload
    def __get__(self, obj: Settings, owner: type) -> _T: ...

    def __get__(self, obj: Settings | None, owner: type) -> Setting[_T] | _T:
        if obj is None:
            return self
        try:
            value: _T = obj._converted[self.attr]
        except KeyError:
            value = obj._converted[self.attr] = self.convert(obj._get(self.key))
        return value

    def __repr__(self) -> str:
        return f"Setting({self.key}={self.default!r})"


def _optional_str(value: Any) -> str | None:
    return None if value is None else str(value)


def _optional_int(value: Any) -> int | None:
    return None if value is None else int(value)


def _optional_float(value: Any) -> float | None:
    return None if value is None else float(value)


def _seconds_or_zero(value: Any) -> float:
    return float(value or 0)


def _strings(value: Any) -> tuple[str, ...]:
    return tuple(value or ())


def _origins(value: Any) -> tuple[str, ...] | None:
    return None if value is None else tuple(o.rstrip("/").lower() for o in value)


def _own_token(value: Any) -> str | None:
    """A service's own token (a gateway's dict of tokens, one per service, is read by ``token_for``)."""
    return value if isinstance(value, str) else None


def _service_entries(value: Any) -> dict[str, ServiceEntry]:
    return {name: ServiceEntry(entry) if isinstance(entry, str) else ServiceEntry(
        entry["url"],
        tuple(entry["entities"]) if entry.get("entities") is not None else None,
        tuple(entry["channels"]) if entry.get("channels") is not None else None)
        for name, entry in (value or {}).items()}


NUMBER = "a positive number (seconds)"


class Settings:
    """Typed access to ``SUPERGRAPH_MESSAGING``: each key declared once, below.

    Values are memoised because they sit on the cache-hit path, and the memo
    is dropped on Django's ``setting_changed`` (sent by ``override_settings``),
    so overrides still take effect at once.
    """

    configured_redis_url = Setting(None, "a redis://, rediss://, unix://, redis+sentinel:// or redis+cluster:// "
                                         "URL, or None", is_optional_str,
                                   doc="None: the LOCATION of CACHES[CACHE_ALIAS], else $REDIS_URL.",
                                   convert=_optional_str, key="REDIS_URL")
    cache_alias = Setting("default", "the name of a cache in CACHES", is_str,
                          doc="A django-redis cache whose connection pool sync calls reuse.",
                          convert=str)
    key_prefix = Setting("", "a string", is_str, "supergraph_messaging.E008",
                         doc="Prepended to every cache key.",
                         convert=str)
    channel_prefix = Setting("", "a string", is_str, "supergraph_messaging.E008",
                             doc="Prepended to every Pub/Sub channel.",
                             convert=str)
    default_ttl = Setting(3600, "a positive integer (seconds) or None", is_optional_positive_int,
                          doc="TTL of cache values when none is given; None never expires.",
                          convert=_optional_int)
    lease_ttl = Setting(10.0, "a number of seconds, at least 0.001 (leases are set in milliseconds)",
                        is_at_least_a_millisecond,
                        doc="How long a cache fill may hold its lease.",
                        convert=float)
    breaker_interval = Setting(0.5, NUMBER, is_positive_number,
                               doc="How often the open circuit breaker probes Redis on a connection of its own.",
                               convert=float)
    socket_timeout = Setting(1.0, NUMBER, is_positive_number,
                             doc="Socket timeout of the connections this app creates.",
                             convert=float)
    socket_connect_timeout = Setting(0.5, NUMBER, is_positive_number,
                                     doc="Connect timeout of the connections this app creates.",
                                     convert=float)
    publish_in_background = Setting(True, "True or False", is_bool,
                                    doc="After commit, send events without waiting for Redis's reply; "
                                    "False: each request waits for its round trip.",
                                    convert=bool)
    publish_queue_size = Setting(10_000, "a positive integer", is_positive_int,
                                 doc="Events per thread sent but not yet confirmed by Redis; beyond it they "
                                 "are dropped and counted (requests never wait).",
                                 convert=int)
    delivery = Setting("pubsub", "'pubsub' or 'durable'", lambda v: v in ("pubsub", "durable"),
                       doc="'durable': events go through the outbox table and a Redis Stream per channel.",
                       convert=str)
    service_name = Setting(None, "a service name (letters, digits, '.', '_', '-') or None",
                           lambda v: v is None or (isinstance(v, str) and bool(re.fullmatch(r"[\w.-]+", v))),
                           doc="Names this service's consumer groups; required with DELIVERY='durable'.",
                           convert=_optional_str)
    stream_maxlen = Setting(10_000, "a positive integer", is_positive_int,
                            doc="Entries of history kept per channel stream for resumes (approximately); "
                            "entries a consumer group has not acknowledged are kept as well.",
                            convert=int)
    stream_hard_maxlen = Setting(1_000_000, "a positive integer", is_positive_int,
                                 doc="A channel stream is cut to this many entries even past consumer groups "
                                 "that have not acknowledged them (logged at ERROR, counted, new epoch).",
                                 convert=int)
    outbox_retention = Setting(86_400, "a positive integer (seconds)", is_positive_int,
                               doc="Relayed outbox rows are deleted after this long; unrelayed rows never.",
                               convert=int)
    relay_batch = Setting(500, "a positive integer", is_positive_int,
                          doc="Outbox rows one relay round takes.",
                          convert=int)
    relay_poll_interval = Setting(0.5, NUMBER, is_positive_number,
                                  doc="How often the relay looks for rows nobody relayed (a crash, an outage).",
                                  convert=float)
    near_cache_size = Setting(10_000, "a positive integer", is_positive_int,
                              doc="Values each process keeps in its near cache (local=True), least recently "
                              "used dropped first.",
                              convert=int)
    sharded_channels = Setting(None, "None or a list of glob patterns", is_optional_str_list,
                               doc="On a Cluster, exact channels matching one of these use sharded Pub/Sub "
                               "(SPUBLISH/SSUBSCRIBE on their slot's node); glob subscriptions never see "
                               "them. Redis >= 7.",
                               convert=_strings)
    configured_durable_replicas = Setting(None, "None or a non-negative integer", is_optional_non_negative_int,
                                          doc="Replicas a relayed event must reach (WAIT) before its outbox row counts "
                                          "as relayed; while fewer are connected, rows stay in the outbox. 0: do "
                                          "not wait; None: 1 behind Sentinel, else 0.",
                                          convert=_optional_int, key="DURABLE_REPLICAS")
    max_deliveries = Setting(5, "a positive integer", is_positive_int,
                             doc="Attempts at a durable event before it goes to the dead-letter stream.",
                             convert=int)
    claim_idle = Setting(60.0, NUMBER, is_positive_number,
                         doc="A durable event another consumer received and has not acknowledged for this long "
                         "(it died) is claimed and handled here.",
                         convert=float)
    ws_recovery_max = Setting(300, "a positive integer", is_positive_int,
                              doc="Most missed events a WebSocket resume replays; beyond it: recovered false.",
                              convert=int)
    ws_recovery_max_bytes = Setting(4 * 1024 * 1024, "a positive integer", is_positive_int,
                                    doc="Most payload bytes a WebSocket resume (or the hub's reconnect) reads "
                                    "per channel; beyond it: recovered false. Each 64 KiB read costs the "
                                    "connection one message of WS_MAX_MESSAGES_PER_SECOND.",
                                    convert=int)
    admin_key_patterns = Setting(None, "None or a list of glob patterns", is_optional_str_list,
                                 doc="Keys the admin cache browser may show besides KEY_PREFIX and the "
                                 "registered templates (session keys never).",
                                 convert=_strings)
    worker_queue_size = Setting(100_000, "a positive integer", is_positive_int,
                                doc="Messages a subscriber holds for its handlers; beyond it they are dropped "
                                "and logged with the channel.",
                                convert=int)
    handler_concurrency = Setting(4, "a positive integer", is_positive_int,
                                  doc="Sync handlers running at once (each channel keeps its order).",
                                  convert=int)
    handler_timeout = Setting(None, "a positive number (seconds) or None", is_optional_positive_number,
                              doc="Stop waiting for a handler after this long; None: wait.",
                              convert=_optional_float)
    shutdown_timeout = Setting(30.0, NUMBER, is_positive_number,
                               doc="On SIGTERM, how long messages already received may take to finish.",
                               convert=float)
    ws_max_subscriptions = Setting(50, "a positive integer", is_positive_int,
                                   doc="Subscriptions per WebSocket connection.",
                                   convert=int)
    ws_max_message_bytes = Setting(65536, "a positive integer", is_positive_int,
                                   doc="Largest client frame.",
                                   convert=int)
    ws_max_in_values = Setting(100, "a positive integer", is_positive_int,
                               doc="Longest list of an `in` filter.",
                               convert=int)
    ws_queue_size = Setting(1000, "a positive integer", is_positive_int,
                            doc="Outgoing frames queued per connection before 4008.",
                            convert=int)
    ws_init_timeout = Setting(10.0, NUMBER, is_positive_number,
                              doc="Time for connection_init before 4408.",
                              convert=float)
    ws_max_messages_per_second = Setting(100, "a positive integer", is_positive_int,
                                         doc="Client frames per second before 4429.",
                                         convert=int)
    ws_ping_interval = Setting(20.0, "a number of seconds >= 0, or None (never ping)", is_optional_non_negative,
                               doc="Server ping interval; 0 or None: never.",
                               convert=_seconds_or_zero)
    ws_pong_timeout = Setting(20.0, NUMBER, is_positive_number,
                              doc="No pong within this closes with 4008.",
                              convert=float)
    ws_max_buffered_bytes = Setting(4 * 1024 * 1024, "a positive integer", is_positive_int,
                                    doc="Bytes sent to a connection and not yet acknowledged by a pong; "
                                    "over it: 4008 (needs pings: WS_PING_INTERVAL > 0).",
                                    convert=int)
    ws_max_event_bytes = Setting(256 * 1024, "a positive integer", is_positive_int,
                                 doc="Largest event delivered over a WebSocket; a larger one becomes a gap.",
                                 convert=int)
    ws_max_fields = Setting(100, "a positive integer", is_positive_int,
                            doc="Most names in a subscription's `fields`.",
                            convert=int)
    ws_auth_recheck_interval = Setting(60.0, "a number of seconds >= 0 (0 or None: only on subscribe)",
                                       is_optional_non_negative,
                                       doc="How often an open connection's user is checked again (0: only on "
                                       "subscribe).",
                                       convert=_seconds_or_zero)
    ws_allowed_origins = Setting(None, "None or a list of origins like 'https://app.example.com:8443'",
                                 is_optional_origin_list,
                                 doc="Exact origins allowed on /subscribe; None: any origin whose host is "
                                 "in ALLOWED_HOSTS.",
                                 convert=_origins)
    schema_access = Setting("staff", "'public', 'staff' or 'token'", lambda v: v in ("public", "staff", "token"),
                            doc="Who may read /__schema and /__asyncapi: anyone, staff users (or a caller "
                            "with SERVICE_TOKEN), or only a caller with SERVICE_TOKEN.",
                            convert=str)
    service_token = Setting(None, "a string of at least 32 characters, a dict of service name -> such a "
                            "string (on a gateway), or None", is_service_token,
                            doc="The secret this service shares with its gateway, sent as 'Authorization: "
                            "Service <token>' and the key of the gateway's signed user assertions; on a "
                            "gateway, one per service.",
                            convert=_own_token)
    gateway_services = Setting(None, "None or a dict of service name -> base URL ('http://events:8002') or "
                               "{'url': ..., 'entities': [...], 'channels': [channel prefixes]}",
                               is_service_map,
                               doc="Gateway mode: serve these services' subscriptions at this /subscribe (each "
                               "service decides who may subscribe, through POST /__authorize), each only "
                               "with the entities and channel prefixes given.",
                               convert=_service_entries)
    gateway_refresh_interval = Setting(30.0, NUMBER, is_positive_number,
                                       doc="How often a gateway reads each service's /__schema again (a service "
                                       "that did not answer: sooner, backing off up to this).",
                                       convert=float)
    gateway_timeout = Setting(2.0, NUMBER, is_positive_number,
                              doc="How long a gateway waits for a service's /__schema or /__authorize, "
                              "in all (connect, headers and body).",
                              convert=float)
    gateway_max_schema_bytes = Setting(1024 * 1024, "a positive integer", is_positive_int,
                                       doc="Largest /__schema a gateway reads from a service; a larger one "
                                       "leaves the service unavailable.",
                                       convert=int)
    gateway_max_entities = Setting(500, "a positive integer", is_positive_int,
                                   doc="Most entities a gateway takes from one service's /__schema; more "
                                   "leaves the service unavailable.",
                                   convert=int)
    ws_token_authenticator = Setting(None, "a dotted path to callable(token) -> user or None, or None",
                                     is_optional_str, doc="Resolves connection_init.payload.token.",
                                     convert=_optional_str)

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


#: Every key, by name, as declared on :class:`Settings`.
SETTINGS: dict[str, Setting[Any]] = {spec.key: spec for spec in vars(Settings).values() if isinstance(spec, Setting)}

DEFAULTS: dict[str, Any] = {name: spec.default for name, spec in SETTINGS.items()}


def settings_reference() -> str:
    """``docs/settings.md``: every key with its default, what it accepts, and what it does."""
    lines = ["# Settings", "",
             "Every key of `SUPERGRAPH_MESSAGING`, generated from `supergraph_messaging/conf.py` "
             "(`python -m supergraph_messaging.conf > docs/settings.md`; a test fails when this page is stale). "
             "`manage.py check` validates each value against what it accepts.", "",
             "| Setting | Default | Accepts | What it does |", "|---|---|---|---|"]
    for name, spec in SETTINGS.items():
        cells = [f"`{name}`", f"`{spec.default!r}`", spec.expected, spec.doc]
        lines.append("| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |")
    return "\n".join(lines) + "\n"


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


if __name__ == "__main__":
    print(settings_reference(), end="")
