"""Publishing an event as part of the current transaction: after the commit (Pub/Sub), or as an outbox row
in it (``DELIVERY = "durable"``); never for a rollback, so a subscriber can always read the committed row.

An event is the payload narrowed to its ``payload_fields`` plus ``_meta``
(channel, action, entity, change id, time, and the previous values of what
changed on an update).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import Any

from django.db import transaction

from supergraph_messaging import tracing
from supergraph_messaging.conf import conf
from supergraph_messaging.delivery import outbox
from supergraph_messaging.delivery.pipelined import failed, published, publisher
from supergraph_messaging.delivery.publish import send
from supergraph_messaging.events import changes
from supergraph_messaging.events.config import EventConfig
from supergraph_messaging.redis.client import get_redis_client
from supergraph_messaging.redis.errors import REDIS_ERRORS

logger = logging.getLogger("supergraph_messaging.events")


def _utc_timestamp() -> str:
    """Now, in ISO 8601 with microseconds and ``Z`` (``datetime.now(UTC).isoformat()`` costs twice this)."""
    seconds, nanoseconds = divmod(time.time_ns(), 1_000_000_000)
    return f"{time.strftime('%Y-%m-%dT%H:%M:%S', time.gmtime(seconds))}.{nanoseconds // 1000:06d}Z"


def make_event(
    config: EventConfig,
    action: str,
    channel: str,
    entity: str,
    data: Mapping[str, Any],
    before: Mapping[str, Any] | None = None,
    event_id: str | None = None,
) -> dict[str, Any]:
    """``event_id``: the change's id when a save made one (:mod:`.changes`), so that a ``CacheSync``
    write for the same save is recognised by the invalidation this event causes."""
    payload = config.restrict(data)
    meta: dict[str, Any] = {
        "event": channel,
        "action": action,
        "entity": entity,
        "event_id": event_id or changes.new_id(),
        "ts": _utc_timestamp(),
    }
    if before is not None:
        meta["previous"] = {
            name: before[name] for name, value in payload.items() if name in before and before[name] != value
        }
    payload["_meta"] = meta
    return payload


def publish_now(channel: str, payload: dict[str, Any]) -> int | None:
    """Publish and wait for the reply; a failure is logged (naming the channel) and counted, never raised.

    Behind the client's circuit breaker: while Redis is known to be down, an
    event fails at once instead of costing every request a connect timeout.
    """
    client = get_redis_client()
    breaker = client.breaker
    if not breaker.allow():
        failed(channel, payload, f"Redis at {client.masked_url} is unavailable", "failed")
        return None
    try:
        receivers = send(client, channel, payload)
    except (TypeError, ValueError) as exc:  # NaN, an object JSON cannot carry: the publisher's bug
        failed(channel, payload, str(exc), "failed")
        return None
    except REDIS_ERRORS as exc:
        breaker.record_failure(exc)
        failed(channel, payload, str(exc), "failed")
        return None
    if breaker.failing:
        breaker.record_success()
    published(channel, payload, receivers)
    return receivers


def flush_events(timeout: float = 5.0) -> bool:
    """Wait until every event sent without waiting is confirmed by Redis (tests, scripts, shutdown).

    With ``DELIVERY = "durable"`` this also relays whatever the outbox holds.
    """
    if conf.durable:
        outbox.relay_all()
    return publisher.flush(timeout)


def publish_event(channel: str, payload: dict[str, Any], using: str | None = None) -> None:
    """Publish ``payload`` on ``channel`` as part of the current transaction.

    With ``DELIVERY = "durable"`` it is written to the outbox now and relayed
    after the commit (never lost, never for a rollback); otherwise it is
    published after the commit, at most once.
    """
    publish_on_commit(channel, payload, using)


def publish_on_commit(channel: str, payload: dict[str, Any], using: str | None = None) -> None:
    """Publish once the current transaction commits (at once outside a transaction).

    With ``DELIVERY = "durable"`` the event is written to the outbox in the
    current transaction instead, and relayed after the commit.
    """
    payload = tracing.published(channel, payload)  # its traceparent in _meta, with OpenTelemetry
    if conf.durable:
        outbox.enqueue(channel, payload, using)
    elif conf.publish_in_background:
        transaction.on_commit(lambda: publisher.publish(channel, payload), using=using)
    else:
        transaction.on_commit(lambda: publish_now(channel, payload), using=using)
