"""One id per saved row change, shared by what reacts to it.

``CacheSync`` stamps the value it writes for a save with this id, and the
event published for the same save carries it as ``_meta.event_id``; an
``invalidate_on`` handler receiving that event then leaves the value alone
(it is that change's own write), where it used to delete it and send the
next reader back to the producing service for the data it had just cached.

The id is made in ``pre_save`` (each save gets a fresh one, so two saves of
one instance are two changes) and read after the save.
"""

from __future__ import annotations

import uuid
from typing import Any

_ATTR = "_supergraph_change_id"


def begin(instance: Any) -> None:
    instance.__dict__[_ATTR] = str(uuid.uuid4())


def of(instance: Any) -> str | None:
    change: str | None = instance.__dict__.get(_ATTR) if instance is not None else None
    return change
