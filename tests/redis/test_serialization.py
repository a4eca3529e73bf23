from __future__ import annotations

import datetime
import decimal
import json
import uuid

import pytest
from django.core.serializers.json import DjangoJSONEncoder

from supergraph_messaging.redis import serialization


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


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_nan_and_infinity_are_refused_with_a_clear_error(bad: float) -> None:
    with pytest.raises(ValueError, match="NaN and Infinity have no JSON form"):
        serialization.dumps({"temperature": bad})


def test_publishing_nan_raises_to_the_publisher(redis_conn: object) -> None:
    from supergraph_messaging import redis_publish

    with pytest.raises(ValueError, match="not valid JSON"):
        redis_publish("nan.events", {"v": float("nan")})
