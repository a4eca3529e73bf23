"""Django signals for in-process observers."""

from __future__ import annotations

from django.dispatch import Signal

#: Sent by a ``RedisSubscriber`` after it reconnected and resubscribed, with
#: ``subscriber=``. Pub/Sub cannot replay what was published during the gap,
#: so receivers resync here (reload state, tell clients, ...).
reconnected = Signal()

#: The sender of ``event_published``: connect with ``sender=EVENTS`` (or none) to hear every event.
EVENTS = "supergraph_messaging.events"

#: Sent with ``sender=EVENTS`` after an ``EventConfig`` event was published (by this process, or by
#: its outbox relay), with ``channel=``, ``payload=`` and ``receivers=``.
event_published = Signal()

#: Sent by a durable consumer that found its channel's history gone (Redis lost its data: the
#: stream and its consumer groups with it), with ``channel=``, ``group=`` and ``handler=``.
#: Events published before may never be delivered: resync here. The invalidation of every
#: cache template fed by the channel, by pattern, is connected already.
stream_reset = Signal()
