"""One id per saved row change, shared by what reacts to it.

``CacheSync`` stamps the value it writes for a save with this id, and the
event published for the same save carries it as ``_meta.event_id``; an
``invalidate_on`` handler receiving that event then leaves the value alone
(it is that change's own write) instead of deleting it and sending the
next reader back to the producing service for the data it had just cached.

The id is made in ``pre_save`` (each save gets a fresh one, so two saves of
one instance are two changes) and read after the save.
"""

from __future__ import annotations

import os
from typing import Any

from django.db import models

_ATTR = "_supergraph_change_id"
_VARIANT = {digit: "89ab"[int(digit, 16) & 3] for digit in "0123456789abcdef"}


def new_id() -> str:
    """A random UUID (version 4) as text, as ``str(uuid.uuid4())`` makes it at half the cost (no
    ``UUID`` object): one is made for every event, on the request's thread."""
    h = os.urandom(16).hex()
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{_VARIANT[h[16]]}{h[17:20]}-{h[20:]}"


def begin(instance: Any) -> None:
    instance.__dict__[_ATTR] = new_id()


def of(instance: Any) -> str | None:
    change: str | None = instance.__dict__.get(_ATTR) if instance is not None else None
    return change


def field_value(instance: models.Model, name: str) -> Any:
    """The field's value; a foreign key gives the related pk (no query)."""
    field = instance._meta.get_field(name)
    if isinstance(field, models.ForeignKey):
        return getattr(instance, field.attname)
    return getattr(instance, name)
