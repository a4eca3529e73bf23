"""``CacheKey`` and ``DeadLetter``: unmanaged models so the admin and its permissions govern what lives in
Redis; ``OutboxEvent`` and ``ProcessedEvent``: tables of durable delivery.

``CacheKey`` and ``DeadLetter`` have no table: the admin's views read
Redis. They exist for Django's permissions (``view_cachekey``,
``delete_cachekey``; ``view_deadletter``, ``change_deadletter`` to replay,
``delete_deadletter`` to discard), the admin index entries and the admin
log.
"""

from __future__ import annotations

from django.db import models


class CacheKey(models.Model):
    key = models.CharField(max_length=1024, primary_key=True)

    class Meta:
        managed = False
        verbose_name = "cache key"
        verbose_name_plural = "cache keys"
        default_permissions = ("view", "delete")

    def __str__(self) -> str:
        return self.key


class DeadLetter(models.Model):
    """A durable event its handler kept failing on, in its channel's dead-letter stream (no table)."""

    id = models.CharField(max_length=1024, primary_key=True)  # "<channel> <dead-letter id>"

    class Meta:
        managed = False
        verbose_name = "dead letter"
        verbose_name_plural = "dead letters"
        default_permissions = ("view", "change", "delete")

    def __str__(self) -> str:
        return self.id


class OutboxEvent(models.Model):
    """An event written in the transaction of the change it describes (the transactional outbox).

    It is relayed to the channel's Redis Stream and Pub/Sub after the commit;
    a row nobody relayed (a crash, Redis down) is picked up by the relay in
    ``messaging_listen``. ``payload`` is the exact JSON text that is sent.
    """

    id = models.BigAutoField(primary_key=True)
    event_id = models.UUIDField(unique=True)
    channel = models.CharField(max_length=255)
    payload = models.TextField()
    created_at = models.DateTimeField(auto_now_add=True)
    relayed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name = "outbox event"
        verbose_name_plural = "outbox events"
        indexes = [
            models.Index(fields=["id"], name="sgm_outbox_unrelayed", condition=models.Q(relayed_at__isnull=True)),
            models.Index(fields=["relayed_at"], name="sgm_outbox_relayed_at"),
        ]

    def __str__(self) -> str:
        return f"{self.channel} #{self.pk}"


class ProcessedEvent(models.Model):
    """Which events a consumer group has applied, for ``@redis_subscribe(..., once=True)``.

    The row is written in the handler's transaction: a redelivered event
    finds it and is skipped, so the handler's effect happens once.
    """

    group = models.CharField(max_length=255)
    event_id = models.CharField(max_length=64)
    processed_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        verbose_name = "processed event"
        verbose_name_plural = "processed events"
        constraints = [models.UniqueConstraint(fields=["group", "event_id"], name="sgm_processed_once")]

    def __str__(self) -> str:
        return f"{self.group}: {self.event_id}"
