"""``invalidate_on``: channel → key templates, served by the global subscriber.

When an event arrives, each template is filled from the payload and that key
is deleted; the key built from ``_meta.previous`` too (a changed MAC must not
leave the old key behind); a template that cannot be filled is invalidated by
pattern, with the payload's values glob-escaped.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from . import stats
from .cache import CacheManager
from .keys import KeyTemplate
from .pubsub import get_global_subscriber

logger = logging.getLogger("supergraph_messaging.cache")


@dataclass
class Registration:
    template: KeyTemplate
    channels: tuple[str, ...]
    source: str
    kind: str = "redis_cache"
    ttl: Any = None


    @property
    def identity(self) -> tuple[str, str, str]:
        return (self.kind, self.source, self.template.template)


#: Every cache template the process knows (decorators and CacheSyncs), for the admin and /__schema.
templates: list[Registration] = []
_by_channel: dict[str, list[KeyTemplate]] = {}


def register(registration: Registration) -> None:
    """Add a template; registering the same (kind, source, template) again replaces it."""
    templates[:] = [r for r in templates if r.identity != registration.identity]
    templates.append(registration)
    wanted: dict[str, list[KeyTemplate]] = {}
    for known in templates:
        for channel in known.channels:
            wanted.setdefault(channel, []).append(known.template)
    subscriber = get_global_subscriber()
    for channel in wanted.keys() - _by_channel.keys():
        subscriber.on(channel)(_on_event)
    for channel in _by_channel.keys() - wanted.keys():
        subscriber.remove_handler(channel, _on_event)
    _by_channel.clear()
    _by_channel.update(wanted)


def keys_for(template: KeyTemplate, payload: Any) -> tuple[set[str], set[str]]:
    """(exact keys, glob patterns) that an event with ``payload`` invalidates."""
    if not isinstance(payload, Mapping):
        return set(), {template.pattern()}
    keys: set[str] = set()
    patterns: set[str] = set()
    key = template.try_fill(payload)
    if key is None:
        patterns.add(template.pattern(payload))
    else:
        keys.add(key)
    meta = payload.get("_meta")
    previous = meta.get("previous") if isinstance(meta, Mapping) else None
    if isinstance(previous, Mapping) and previous:
        old = {**payload, **previous}
        old_key = template.try_fill(old)
        if old_key is not None:
            keys.add(old_key)
        elif key is not None:
            patterns.add(template.pattern(old))
    return keys, patterns


async def invalidate_for_event(channel: str, payload: Any) -> int:
    manager = CacheManager()
    deleted = 0
    for template in _by_channel.get(channel, ()):
        keys, patterns = keys_for(template, payload)
        if keys:
            deleted += await manager.ainvalidate(*keys)
        for pattern in patterns:
            deleted += await manager.ainvalidate_pattern(pattern)
        stats.incr(template.template, "invalidations", len(keys) + len(patterns))
    return deleted


async def _on_event(payload: Any, channel: str) -> None:
    deleted = await invalidate_for_event(channel, payload)
    logger.debug("Event on %r invalidated %d key(s).", channel, deleted)
