"""The one JSON codec of every Redis path (cache values and Pub/Sub messages).

JSON, never pickle: any service in any language can read what we write, and a
value planted in Redis can never execute code in ours.
"""

from __future__ import annotations

import json
from typing import Any

from django.core.serializers.json import DjangoJSONEncoder

# allow_nan=False: NaN and Infinity are not JSON; browsers and other languages reject them.
_encoder = DjangoJSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False)
def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


# Python's json reads NaN and Infinity; other languages and browsers do not, so neither do we.
_decode = json.JSONDecoder(parse_constant=_reject_constant).decode


def dumps(value: Any) -> bytes:
    """Encode like ``DjangoJSONEncoder`` (datetimes, dates, UUIDs, Decimals)."""
    try:
        return _encoder.encode(value).encode()
    except TypeError as exc:
        raise TypeError(f"Value is not JSON serializable: {exc}") from exc
    except ValueError as exc:  # NaN, Infinity; a circular reference
        raise ValueError(f"Value is not valid JSON: {exc} (NaN and Infinity have no JSON form).") from exc


def without_position(value: Any) -> Any:
    """``value`` without a top-level ``_position``: positions are the stream's to give, never a payload's."""
    if isinstance(value, dict) and "_position" in value:
        return {k: v for k, v in value.items() if k != "_position"}
    return value


def loads(raw: bytes | str) -> Any:
    """Decode; raises ``ValueError`` (``json.JSONDecodeError``) on bad input."""
    if isinstance(raw, bytes):
        raw = raw.decode()
    return _decode(raw)


class _Undecodable:
    def __repr__(self) -> str:
        return "UNDECODABLE"


#: What :func:`decode_or_undecodable` returns for bytes that are not our JSON.
UNDECODABLE: Any = _Undecodable()


def decode_or_undecodable(raw: bytes | str) -> Any:
    """Decode, or :data:`UNDECODABLE` for anything that is not JSON (truncated, binary, too deep,
    an integer of more digits than Python parses): a value planted or damaged in Redis must never
    make every reader raise."""
    try:
        return loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return UNDECODABLE


def roundtrip(value: Any) -> Any:
    """What a reader of the encoded value will see: a miss returns this too."""
    return loads(dumps(value))
