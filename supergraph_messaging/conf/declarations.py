"""The keys of ``SUPERGRAPH_MESSAGING``, declared once each, grouped by concern.

:class:`~supergraph_messaging.conf.Settings` inherits every group; the
order here is the order of ``docs/settings.md``.
"""

from __future__ import annotations

import re

from supergraph_messaging.conf.setting import Setting
from supergraph_messaging.conf.validators import (
    NUMBER,
    is_at_least_a_millisecond,
    is_bool,
    is_optional_non_negative,
    is_optional_non_negative_int,
    is_optional_origin_list,
    is_optional_positive_int,
    is_optional_positive_number,
    is_optional_str,
    is_optional_str_list,
    is_positive_int,
    is_positive_number,
    is_service_map,
    is_service_token,
    is_str,
    optional_float,
    optional_int,
    optional_str,
    origins,
    own_token,
    seconds_or_zero,
    service_entries,
    strings,
)


class RedisSettings:
    """Where Redis is, how the app talks to it, and how keys and channels are named."""

    configured_redis_url = Setting(None, "a redis://, rediss://, unix://, redis+sentinel:// or redis+cluster:// "
                                         "URL, or None", is_optional_str,
                                   doc="None: the LOCATION of CACHES[CACHE_ALIAS], else $REDIS_URL.",
                                   convert=optional_str, key="REDIS_URL")
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
                          convert=optional_int)
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
    sharded_channels = Setting(None, "None or a list of glob patterns", is_optional_str_list,
                               doc="On a Cluster, exact channels matching one of these use sharded Pub/Sub "
                               "(SPUBLISH/SSUBSCRIBE on their slot's node); glob subscriptions never see "
                               "them. Redis >= 7.",
                               convert=strings)
    near_cache_size = Setting(10_000, "a positive integer", is_positive_int,
                              doc="Values each process keeps in its near cache (local=True), least recently "
                              "used dropped first.",
                              convert=int)
    admin_key_patterns = Setting(None, "None or a list of glob patterns", is_optional_str_list,
                                 doc="Keys the admin cache browser may show besides KEY_PREFIX and the "
                                 "registered templates (session keys never).",
                                 convert=strings)


class DeliverySettings:
    """How messages are published and delivered: Pub/Sub or durable, the outbox relay, consumer groups, the
    worker."""

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
                           convert=optional_str)
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
    health_sample_interval = Setting(10.0, "a positive number (seconds) or None",
                                     is_optional_positive_number,
                                     doc="How often one process samples the numbers of /metrics for the admin's "
                                     "Messaging health page (an hour of them is kept in Redis); None: never.",
                                     convert=optional_float)
    health_outbox_max_age = Setting(60.0, NUMBER, is_positive_number,
                                    doc="GET /__health/ready fails (503) while the oldest unrelayed outbox row is "
                                    "older than this many seconds: the relay is stuck or Redis is gone.",
                                    convert=float)
    configured_durable_replicas = Setting(None, "None or a non-negative integer", is_optional_non_negative_int,
                                          doc="Replicas a relayed event must reach (WAIT) before its outbox row counts "
                                          "as relayed; while fewer are connected, rows stay in the outbox. 0: do "
                                          "not wait; None: 1 behind Sentinel, else 0.",
                                          convert=optional_int, key="DURABLE_REPLICAS")
    max_deliveries = Setting(5, "a positive integer", is_positive_int,
                             doc="Attempts at a durable event before it goes to the dead-letter stream.",
                             convert=int)
    claim_idle = Setting(60.0, NUMBER, is_positive_number,
                         doc="A durable event another consumer received and has not acknowledged for this long "
                         "(it died) is claimed and handled here.",
                         convert=float)
    worker_queue_size = Setting(100_000, "a positive integer", is_positive_int,
                                doc="Messages a subscriber holds for its handlers; beyond it they are dropped "
                                "and logged with the channel.",
                                convert=int)
    handler_concurrency = Setting(4, "a positive integer", is_positive_int,
                                  doc="Sync handlers running at once (each channel keeps its order).",
                                  convert=int)
    handler_timeout = Setting(None, "a positive number (seconds) or None", is_optional_positive_number,
                              doc="Stop waiting for a handler after this long; None: wait.",
                              convert=optional_float)
    shutdown_timeout = Setting(30.0, NUMBER, is_positive_number,
                               doc="On SIGTERM, how long messages already received may take to finish.",
                               convert=float)


class WebSocketSettings:
    """The ``/subscribe`` endpoint: limits, keepalive, resume and authentication."""

    ws_recovery_max = Setting(300, "a positive integer", is_positive_int,
                              doc="Most missed events a WebSocket resume replays; beyond it: recovered false.",
                              convert=int)
    ws_recovery_max_bytes = Setting(4 * 1024 * 1024, "a positive integer", is_positive_int,
                                    doc="Most payload bytes a WebSocket resume (or the hub's reconnect) reads "
                                    "per channel; beyond it: recovered false. Each 64 KiB read costs the "
                                    "connection one message of WS_MAX_MESSAGES_PER_SECOND.",
                                    convert=int)
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
                               convert=seconds_or_zero)
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
                                       convert=seconds_or_zero)
    ws_allowed_origins = Setting(None, "None or a list of origins like 'https://app.example.com:8443'",
                                 is_optional_origin_list,
                                 doc="Exact origins allowed on /subscribe; None: any origin whose host is "
                                 "in ALLOWED_HOSTS.",
                                 convert=origins)
    ws_token_authenticator = Setting(None, "a dotted path to callable(token) -> user or None, or None",
                                     is_optional_str, doc="Resolves connection_init.payload.token.",
                                     convert=optional_str)


class GatewaySettings:
    """What a service tells about itself (``/__schema``) and how a gateway reads other services."""

    schema_access = Setting("staff", "'public', 'staff' or 'token'", lambda v: v in ("public", "staff", "token"),
                            doc="Who may read /__schema and /__asyncapi: anyone, staff users (or a caller "
                            "with SERVICE_TOKEN), or only a caller with SERVICE_TOKEN.",
                            convert=str)
    service_token = Setting(None, "a string of at least 32 characters, a dict of service name -> such a "
                            "string (on a gateway), or None", is_service_token,
                            doc="The secret this service shares with its gateway, sent as 'Authorization: "
                            "Service <token>' and the key of the gateway's signed user assertions; on a "
                            "gateway, one per service.",
                            convert=own_token)
    gateway_services = Setting(None, "None or a dict of service name -> base URL ('http://events:8002') or "
                               "{'url': ..., 'entities': [...], 'channels': [channel prefixes]}",
                               is_service_map,
                               doc="Gateway mode: serve these services' subscriptions at this /subscribe (each "
                               "service decides who may subscribe, through POST /__authorize), each only "
                               "with the entities and channel prefixes given.",
                               convert=service_entries)
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

