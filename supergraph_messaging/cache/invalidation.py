"""``invalidate_on``: channel → key templates, served by the global subscriber.

When an event arrives, each template is filled from the payload and that key
is deleted; the key built from ``_meta.previous`` too (a changed MAC must not
leave the old key behind); a template that cannot be filled is invalidated by
pattern, with the payload's values glob-escaped.
"""

from __future__ import annotations

import itertools
import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from django.dispatch import receiver

from supergraph_messaging.cache import stats
from supergraph_messaging.cache.manager import CacheManager
from supergraph_messaging.cache.templates import KeyTemplate
from supergraph_messaging.delivery.subscriber import get_global_subscriber
from supergraph_messaging.redis.keys import escape_glob
from supergraph_messaging.signals import stream_reset

logger = logging.getLogger("supergraph_messaging.cache")


@dataclass
class Registration:
    template: KeyTemplate
    channels: tuple[str, ...]
    source: str
    kind: str = "redis_cache"
    ttl: Any = None
    #: "pattern": a placeholder missing from an event invalidates by pattern; "skip": nothing.
    on_missing: str = "pattern"


    @property
    def identity(self) -> tuple[str, str, str]:
        return (self.kind, self.source, self.template.template)


#: Every cache template the process knows (decorators and CacheSyncs), for the admin and /__schema.
templates: list[Registration] = []
_by_channel: dict[str, list[tuple[KeyTemplate, str]]] = {}


def register(registration: Registration) -> None:
    """Add a template; registering the same (kind, source, template) again replaces it."""
    templates[:] = [r for r in templates if r.identity != registration.identity]
    templates.append(registration)
    wanted: dict[str, list[tuple[KeyTemplate, str]]] = {}
    for known in templates:
        for channel in known.channels:
            wanted.setdefault(channel, []).append((known.template, known.on_missing))
    subscriber = get_global_subscriber()
    for channel in wanted.keys() - _by_channel.keys():
        subscriber.on(channel)(_on_event)
    for channel in _by_channel.keys() - wanted.keys():
        subscriber.remove_handler(channel, _on_event)
    _by_channel.clear()
    _by_channel.update(wanted)


#: How many keys one event may name for one template before it is invalidated by pattern instead.
MAX_FORMS = 32
_MISSING = object()


def value_forms(value: Any) -> list[str] | None:
    """The strings a reader's key may hold for a payload value; None when no key can come from it.

    A present value is formatted exactly as ``str.format`` formats the reader's
    argument (``None`` gives ``"None"``, never a pattern). An integral float
    also gives its integer form, because producers in other languages (and
    JSON itself) do not keep ``1.0`` apart from ``1`` while a Python reader's
    ``int`` argument formats as ``"1"``; a boolean also gives ``"1"``/``"0"``
    and ``"true"``/``"false"``. An extra invalidation costs one miss; a
    skipped one leaves stale data.
    """
    if isinstance(value, (list, dict, tuple, set)):
        return None
    if isinstance(value, bool):
        return [str(value), str(int(value)), str(value).lower()]
    if isinstance(value, float) and value.is_integer():
        return [str(value), str(int(value))]
    return [str(value)]


def keys_for(template: KeyTemplate, payload: Any, on_missing: str = "pattern") -> tuple[set[str], set[str]]:
    """(exact keys, glob patterns) that an event with ``payload`` invalidates for ``template``.

    A placeholder missing from the payload makes the key a pattern (``*`` in its
    place), or skips the template with ``on_missing="skip"``. A list or object
    value skips the template (with a warning): no key was built from one. So
    does a payload that is not an object, unless the template has no
    placeholders (then its one key goes).
    ``_meta.previous`` values build the old key the same way.
    """
    if not isinstance(payload, Mapping):
        if template.roots:
            # No key can be told from it, and wiping the template (every tenant's keys) is not an
            # answer to a payload anyone who can PUBLISH on the channel may send.
            logger.warning("Skipped invalidating %r: an event that is a %s, not an object.",
                           template.template, type(payload).__name__)
            return set(), set()
        payload = {}
    keys, patterns = _keys_for_values(template, payload, on_missing)
    meta = payload.get("_meta")
    previous = meta.get("previous") if isinstance(meta, Mapping) else None
    if isinstance(previous, Mapping) and previous:
        old_keys, old_patterns = _keys_for_values(template, {**payload, **previous}, on_missing)
        keys |= old_keys
        patterns |= old_patterns
    return keys, patterns


def _keys_for_values(template: KeyTemplate, values: Mapping[str, Any],
                     on_missing: str) -> tuple[set[str], set[str]]:
    literals: list[str] = []
    choices: list[list[str] | None] = []  # None: a wildcard
    for literal, field, root in template.parts:
        literals.append(literal)
        if field is None:
            continue
        value = values.get(root, _MISSING) if field == root else _MISSING
        if value is _MISSING:
            if on_missing == "skip":
                return set(), set()
            choices.append(None)
            continue
        forms = value_forms(value)
        if forms is None:
            logger.warning("Skipped invalidating %r: the event's %r is a %s, which no key is built from.",
                           template.template, root, type(value).__name__)
            return set(), set()
        choices.append(forms)
    combinations = math.prod(len(forms) for forms in choices if forms)
    if combinations > MAX_FORMS:
        choices = [forms[:1] if forms else None for forms in choices]  # each value as formatted, only
    wildcard = any(forms is None for forms in choices)
    results: set[str] = set()
    options: list[list[str | None]] = [list(forms) if forms else [None] for forms in choices]
    for combo in itertools.product(*options):
        out: list[str] = []
        for i, literal in enumerate(literals):
            out.append(escape_glob(literal) if wildcard else literal)
            if i < len(combo):
                part = combo[i]
                out.append("*" if part is None else escape_glob(part) if wildcard else part)
        results.add("".join(out))
    return (set(), results) if wildcard else (results, set())


async def invalidate_for_event(channel: str, payload: Any) -> int:
    manager = CacheManager()
    deleted = 0
    change = _change_of(payload)
    for template, on_missing in _by_channel.get(channel, ()):
        keys, patterns = keys_for(template, payload, on_missing)
        if keys and change:
            # A key the producer's CacheSync rewrote for this very change stays: deleting it would only
            # cost the next reader a miss (a fallback to the producing service) for the same data.
            deleted += await manager.ainvalidate_unless(sorted(keys), change)
        elif keys:
            deleted += await manager.ainvalidate(*keys)
        for pattern in patterns:
            deleted += await manager.ainvalidate_pattern(pattern)
        stats.incr(template.template, "invalidations", len(keys) + len(patterns))
    return deleted


def _change_of(payload: Any) -> str | None:
    """The id of the change an event announces (``_meta.event_id``, as ``CacheSync`` stamps its writes)."""
    meta = payload.get("_meta") if isinstance(payload, dict) else None
    change = meta.get("event_id") if isinstance(meta, dict) else None
    return change if isinstance(change, str) and change else None


async def _on_event(payload: Any, channel: str) -> None:
    deleted = await invalidate_for_event(channel, payload)
    logger.debug("Event on %r invalidated %d key(s).", channel, deleted)


@receiver(stream_reset)
async def _on_stream_reset(channel: str, handler: Any, **kwargs: Any) -> None:
    """History lost: every key of the templates this channel feeds may be stale. Delete them by pattern."""
    if handler is not _on_event:
        return
    manager = CacheManager()
    deleted = 0
    for template, _on_missing in _by_channel.get(channel, ()):
        deleted += await manager.ainvalidate_pattern(template.pattern())
    logger.warning("The history of %r was lost: invalidated %d key(s) of its templates by pattern.", channel, deleted)
