"""The one JSON codec of every Redis path (cache values and Pub/Sub messages).

JSON, never pickle: any service in any language can read what we write, and a
value planted in Redis can never execute code in ours.
"""

from __future__ import annotations

import json
from typing import Any

from django.core.serializers.json import DjangoJSONEncoder

_encoder = DjangoJSONEncoder(separators=(",", ":"), ensure_ascii=False)
_decode = json.JSONDecoder().decode


def dumps(value: Any) -> bytes:
    """Encode like ``DjangoJSONEncoder`` (datetimes, dates, UUIDs, Decimals)."""
    try:
        return _encoder.encode(value).encode()
    except TypeError as exc:
        raise TypeError(f"Value is not JSON serializable: {exc}") from exc


def loads(raw: bytes | str) -> Any:
    """Decode; raises ``ValueError`` (``json.JSONDecodeError``) on bad input."""
    if isinstance(raw, bytes):
        raw = raw.decode()
    return _decode(raw)


def roundtrip(value: Any) -> Any:
    """What a reader of the encoded value will see: a miss returns this too."""
    return loads(dumps(value))
