from __future__ import annotations

import datetime
import decimal
import json
import uuid

import pytest
from django.core.serializers.json import DjangoJSONEncoder

from supergraph_messaging import serialization


def test_dumps_matches_django_encoder() -> None:
    value = {"t": datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC), "u": uuid.uuid4(),
             "d": decimal.Decimal("2.50"), "x": [1, "é"]}
    expected = json.loads(json.dumps(value, cls=DjangoJSONEncoder))
    assert json.loads(serialization.dumps(value)) == expected


def test_roundtrip_and_errors() -> None:
    assert serialization.roundtrip({"a": (1, 2)}) == {"a": [1, 2]}
    with pytest.raises(TypeError, match="not JSON serializable"):
        serialization.dumps({"a": object()})
    with pytest.raises(ValueError):
        serialization.loads(b"{nope")
