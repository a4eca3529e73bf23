"""Errors raised by this app; all derive from one base so callers can catch it."""

from __future__ import annotations


class MessagingError(Exception):
    pass


class RedisUnavailable(MessagingError, ConnectionError):
    """Redis could not be reached; the message names the (masked) URL."""


class CacheKeyError(MessagingError, KeyError):
    """A key template placeholder could not be filled."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else ""


class NotReplicated(RedisUnavailable):
    """Appended events did not reach ``DURABLE_REPLICAS`` replicas in time: their outbox rows stay
    unrelayed and are appended again (idempotently) by the next relay round."""
