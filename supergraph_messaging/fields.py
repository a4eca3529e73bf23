"""Model field values as events and caches carry them."""

from __future__ import annotations

from typing import Any

from django.db import models


def field_value(instance: models.Model, name: str) -> Any:
    """The field's value; a foreign key gives the related pk (no query)."""
    field = instance._meta.get_field(name)
    if isinstance(field, models.ForeignKey):
        return getattr(instance, field.attname)
    return getattr(instance, name)
