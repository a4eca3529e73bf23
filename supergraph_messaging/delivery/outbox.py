"""The transactional outbox: an event is a row written with the change, relayed after the commit.

With ``DELIVERY = "durable"`` a committed change can no longer lose its
event: the row commits or rolls back with the change, the web process only
nudges the relay after the commit (one send, no wait), and the relay in
``messaging_listen`` appends each row to its channel's stream and publishes
it (:mod:`streams`, idempotently by event id), then marks it relayed. A row
that was not relayed (the process was killed, Redis was down) is found by
the relay's next poll. Rows are claimed with ``SELECT … FOR UPDATE SKIP
LOCKED`` where the database has it, and never by "id greater than the last
one": ids are allocated before commit, so a lower id can commit later.
"""

from __future__ import annotations

import asyncio
import datetime
import functools
import json
import logging
import time
import uuid
from typing import Any

from django.db import DatabaseError, connections, router, transaction
from django.utils import timezone

from supergraph_messaging import counters as operational
from supergraph_messaging import tracing
from supergraph_messaging.conf import conf
from supergraph_messaging.delivery import streams
from supergraph_messaging.delivery.pipelined import publisher
from supergraph_messaging.exceptions import NotReplicated
from supergraph_messaging.redis.client import get_redis_client
from supergraph_messaging.redis.errors import REDIS_ERRORS
from supergraph_messaging.redis.serialization import decode_or_undecodable, dumps, without_position
from supergraph_messaging.signals import EVENTS, event_published

logger = logging.getLogger("supergraph_messaging.outbox")

#: The channel a web process pokes after a commit, so the relay does not wait for its poll.
NUDGE_CHANNEL = "sgm:relay"
DELETE_BATCH = 1_000
#: The advisory lock key of the relay on PostgreSQL (a constant 63-bit number: "sgm relay").
RELAY_LOCK_KEY = 0x53474D_52454C4159 & 0x7FFF_FFFF_FFFF_FFFF

counters = {"enqueued": 0, "relayed": 0, "unencodable": 0, "lagging": 0}


def _model() -> Any:
    from supergraph_messaging.models import OutboxEvent

    return OutboxEvent


def _event_id(payload: Any) -> uuid.UUID:
    meta = payload.get("_meta") if isinstance(payload, dict) else None
    try:
        return uuid.UUID(str(meta["event_id"])) if isinstance(meta, dict) and "event_id" in meta else uuid.uuid4()
    except ValueError:
        return uuid.uuid4()


def enqueue(channel: str, payload: Any, using: str | None = None) -> uuid.UUID | None:
    """Write the event in the current transaction; returns its id (None if it cannot be encoded).

    One plain INSERT, not ``Model.objects.create``: this runs in every write request, and the ORM's
    instance, signals and returning id tripled its cost (115-234 us against 36-54 us, SQLite).
    """
    model = _model()
    db = using or router.db_for_write(model)
    try:
        data = dumps(without_position(payload)).decode()
    except (TypeError, ValueError) as exc:  # NaN, an object JSON cannot carry: the producer's bug, logged
        counters["unencodable"] += 1
        logger.error("Event on %r not written to the outbox: %s", channel, exc)
        return None
    event_id = _event_id(payload)
    connection = connections[db]
    opts = model._meta
    fields = opts.get_field("event_id"), opts.get_field("created_at")
    with connection.cursor() as cursor:
        cursor.execute(_insert_sql(db), [fields[0].get_db_prep_save(event_id, connection), channel, data,
                                                 fields[1].get_db_prep_save(timezone.now(), connection)])
    counters["enqueued"] += 1
    operational.incr(("outbox_enqueued", channel))
    if not _nudge_registered(connection):
        transaction.on_commit(nudge, using=db)
    return event_id


def _nudge_registered(connection: Any) -> bool:
    """One wake-up call per commit, not one per event: true when a nudge is registered that no rollback
    to a savepoint open now can discard (one made in a savepoint since rolled back is gone already)."""
    open_savepoints = set(connection.savepoint_ids)
    return any(func is nudge and savepoints <= open_savepoints for savepoints, func, *_ in connection.run_on_commit)


@functools.cache
def _insert_sql(db: str) -> str:
    opts = _model()._meta
    qn = connections[db].ops.quote_name
    columns = ", ".join(qn(opts.get_field(name).column) for name in ("event_id", "channel", "payload", "created_at"))
    return f"INSERT INTO {qn(opts.db_table)} ({columns}) VALUES (%s, %s, %s, %s)"


def nudge() -> None:
    """Wake the relay now (best effort: without it the relay's poll finds the row)."""
    publisher.publish_raw(NUDGE_CHANNEL, b"1")


def relay(using: str | None = None, limit: int | None = None) -> int:
    """Relay the oldest unrelayed rows (at most ``limit``); returns how many were relayed.

    Raises :class:`RedisUnavailable` when Redis cannot be reached (the rows stay unrelayed).
    """
    model = _model()
    db = using or router.db_for_write(model)
    client = get_redis_client()
    unrelayed = model.objects.using(db).filter(relayed_at__isnull=True).order_by("id")[: limit or conf.relay_batch]

    def append(rows: list[Any]) -> list[tuple[int, str, bool, int]]:
        generation = client.generation
        started = time.time_ns()
        with client.boundary:
            results = streams.append_many(client.redis, [(r.channel, str(r.event_id), r.payload) for r in rows])
        if tracing.active():  # a "relay" span per row, the child of the trace its event was published in
            finished = time.time_ns()
            for r in rows:
                meta = decode_or_undecodable(r.payload.encode())
                tracing.ended(f"{r.channel} relay", meta.get("_meta") if isinstance(meta, dict) else None,
                              started, finished, **{"messaging.destination.name": r.channel})
        if client.generation != generation:
            # Sentinel moved the primary meanwhile: the appends may be on the demoted one, which discards
            # them when it resyncs. Appended again on the new primary, idempotently.
            raise NotReplicated(f"Sentinel moved the primary of {client.masked_url} while {len(rows)} event(s) "
                                "were appended; their outbox rows stay unrelayed and the next round appends "
                                "them again.")
        return results

    def mark(rows: list[Any]) -> None:
        model.objects.using(db).filter(id__in=[r.id for r in rows]).update(relayed_at=timezone.now())

    if connections[db].features.has_select_for_update_skip_locked:
        with transaction.atomic(using=db):
            if not _relay_lock(db):
                return 0  # another relay is active on this database: stand by
            rows = list(unrelayed.select_for_update(skip_locked=True))
            if not rows:
                return 0
            results = append(rows)
            mark(rows)
    else:
        # No row locks to take (SQLite): read, append, then mark in a short write, so that the write
        # lock is never held across a Redis round trip (writers waited up to 100 ms in SQLite's busy
        # handler: commit -> handler p99 55 ms at 200 writes/s). Relays reading the same rows append
        # them in id order and the stream script drops the second append.
        rows = list(unrelayed)
        if not rows:
            return 0
        results = append(rows)
        with transaction.atomic(using=db):
            mark(rows)
    counters["relayed"] += len(rows)
    for row, (_offset, _epoch, published, _receivers) in zip(rows, results, strict=True):
        operational.incr(("outbox_relayed", row.channel))
        if published:
            operational.incr(("events_published", row.channel))
    _trim_and_pace(client, {r.channel for r in rows})
    _announce(rows, results)
    republished = sum(not published for _, _, published, _ in results)
    if republished:
        logger.info("%d outbox row(s) had been appended already (a relay stopped mid-way, or a replica was "
                    "late); not published again.", republished)
    return len(rows)


_lagging: set[str] = set()


def _trim_and_pace(client: Any, channels: set[str]) -> None:
    """Trim the streams just appended to (never past what a group has not acknowledged), and slow down
    while a group lags more than ``STREAM_MAXLEN`` behind: the stream keeps what it has not read, so the
    relay's pace is what bounds its growth."""
    lag = 0
    for channel in sorted(channels):
        try:
            with client.boundary:
                behind, _lost = streams.trim(client.redis, channel)
        except REDIS_ERRORS as exc:
            logger.debug("Trimming %r waits for the next round: %s", channel, exc)
            continue
        lag = max(lag, behind)
        if behind > conf.stream_maxlen:
            if channel not in _lagging:
                _lagging.add(channel)
                counters["lagging"] += 1
                logger.warning("A consumer group of %r has %d event(s) not yet acknowledged (STREAM_MAXLEN %d); "
                               "the relay slows down until it catches up.", channel, behind, conf.stream_maxlen)
        elif channel in _lagging:
            _lagging.discard(channel)
            logger.info("The consumer groups of %r caught up.", channel)
    if lag > conf.stream_maxlen:
        time.sleep(min(0.5, 0.02 * lag / conf.stream_maxlen))


def _relay_lock(db: str) -> bool:
    """One relay at a time per database, for the current transaction (PostgreSQL: an advisory lock).

    Two relays claiming disjoint batches with SKIP LOCKED could append a row's later version before its
    earlier one (measured: 97 reorders in a chaos round without it).
    """
    conn = connections[db]
    if conn.vendor != "postgresql":
        return True
    with conn.cursor() as cursor:
        cursor.execute("SELECT pg_try_advisory_xact_lock(%s)", [RELAY_LOCK_KEY])
        return bool(cursor.fetchone()[0])


def _announce(rows: list[Any], results: list[tuple[int, str, bool, int]]) -> None:
    """``event_published`` for each row this relay published, as the pub/sub path sends it."""
    if not event_published.has_listeners(EVENTS):
        return
    for row, (_, _, published, receivers) in zip(rows, results, strict=True):
        if published:
            event_published.send(sender=EVENTS, channel=row.channel, payload=json.loads(row.payload),
                                 receivers=receivers)


def relay_all(using: str | None = None) -> int:
    """Relay until nothing is left (tests, scripts, ``flush_events``)."""
    total = 0
    while True:
        done = relay(using)
        total += done
        if not done:
            return total


def delete_relayed(using: str | None = None) -> int:
    """Delete relayed rows older than ``OUTBOX_RETENTION``, in batches; unrelayed rows never expire."""
    model = _model()
    db = using or router.db_for_write(model)
    cutoff = timezone.now() - datetime.timedelta(seconds=conf.outbox_retention)
    deleted = 0
    while True:
        ids = list(model.objects.using(db).filter(relayed_at__lt=cutoff).values_list("id", flat=True)[:DELETE_BATCH])
        if not ids:
            return deleted
        deleted += model.objects.using(db).filter(id__in=ids).delete()[0]


def backlog(using: str | None = None) -> tuple[int, float | None]:
    """(unrelayed rows, age in seconds of the oldest one)."""
    model = _model()
    db = using or router.db_for_write(model)
    pending = model.objects.using(db).filter(relayed_at__isnull=True)
    oldest = pending.order_by("id").values_list("created_at", flat=True).first()
    age = (timezone.now() - oldest).total_seconds() if oldest is not None else None
    return pending.count(), age


def _relay_round() -> int:
    """Relay until a batch comes back short: then the outbox was drained as of that read, and a row
    committed since brings its own nudge. (Reading once more to find nothing cost a second
    transaction per nudge.)

    The relay keeps its database connection between rounds and drops it only after an error:
    ``close_old_connections`` with the default ``CONN_MAX_AGE = 0`` reconnected on every nudge, which
    on PostgreSQL was most of the relay's latency.
    """
    try:
        total = 0
        while True:
            done = relay()
            total += done
            if done < conf.relay_batch:
                return total
    except DatabaseError:
        connections.close_all()  # this thread's: the next round connects afresh
        raise


async def relay_forever(stop: asyncio.Event, wake: asyncio.Event) -> None:
    """The relay loop of ``messaging_listen``: on a nudge, else every ``RELAY_POLL_INTERVAL``."""
    from asgiref.sync import sync_to_async

    run = sync_to_async(_relay_round, thread_sensitive=True)
    cleanup = sync_to_async(delete_relayed, thread_sensitive=True)
    failing = False
    rounds = 0
    while not stop.is_set():
        try:
            async with asyncio.timeout(conf.relay_poll_interval):
                await wake.wait()
        except TimeoutError:
            pass
        wake.clear()
        try:
            relayed = await run()
            if failing:
                failing = False
                logger.info("The outbox relay reaches Redis again.")
            if relayed:
                logger.debug("Relayed %d outbox event(s).", relayed)
            rounds += 1
            if rounds % 1000 == 1:
                await cleanup()
        except asyncio.CancelledError:
            raise
        except REDIS_ERRORS as exc:
            if not failing:
                failing = True
                logger.warning("The outbox relay cannot reach Redis (%s); events wait in the outbox.", exc)
        except Exception:
            logger.exception("An outbox relay round failed; the next one retries.")
