"""What a client may ask of a subscription: filters (``field__op: value``), their operators, the field types
that refuse a filter which could never match, and how an event's raw JSON is screened before it is decoded.

Matching is JSON-strict: ``"36"`` never matches ``36`` and ``true`` never
``1``, except for a field declared ``Decimal``, which compares as a number on
both sides (DRF writes a ``DecimalField`` as a string).
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

OPERATORS: dict[str, Callable[[Any, Any], bool]] = {}


def _op(name: str) -> Callable[[Callable[[Any, Any], bool]], Callable[[Any, Any], bool]]:
    def register(func: Callable[[Any, Any], bool]) -> Callable[[Any, Any], bool]:
        def safe(value: Any, expected: Any) -> bool:
            try:
                return bool(func(value, expected))
            except TypeError:  # e.g. "a" > 1: an event of another shape simply does not match
                return False

        OPERATORS[name] = safe
        return func

    return register


def match_key(value: Any) -> Any:
    """How a JSON scalar compares in filters: ``true`` is not ``1`` (Python says it is)."""
    return ("bool", value) if isinstance(value, bool) else value


@_op("eq")
def _eq(value: Any, expected: Any) -> bool:
    return bool(value == expected) and isinstance(value, bool) == isinstance(expected, bool)


@_op("ne")
def _ne(value: Any, expected: Any) -> bool:
    return not _eq(value, expected)


_op("gt")(operator.gt)
_op("gte")(operator.ge)
_op("lt")(operator.lt)
_op("lte")(operator.le)


@_op("in")
def _in(value: Any, expected: Any) -> bool:
    if isinstance(expected, frozenset):  # of match_key()s: see parse_filters
        return match_key(value) in expected
    return any(_eq(value, e) for e in expected)


@_op("contains")
def _contains(value: Any, expected: Any) -> bool:
    return value is not None and expected in value


@_op("icontains")
def _icontains(value: Any, expected: Any) -> bool:
    return isinstance(value, str) and isinstance(expected, str) and expected.casefold() in value.casefold()


class Refused(ValueError):
    """A subscribe answered with an ``error`` frame for its id; the connection stays open."""

    code = "forbidden"

    def __init__(self, message: str, code: str | None = None) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code


class FilterError(Refused):
    """A client filter the Subscription does not allow (sent back as ``invalid_filter``)."""

    code = "invalid_filter"


@dataclass(frozen=True)
class Condition:
    """``field op value``. ``numeric``: the field is declared ``Decimal``, so both sides compare as
    numbers (an event's ``"19.90"``, as DRF writes a ``DecimalField``, is less than ``20``)."""

    field: str
    op: str
    value: Any
    numeric: bool = False

    def matches(self, data: Mapping[str, Any]) -> bool:
        if self.field not in data:
            return False
        if self.numeric:
            number = as_decimal(data[self.field])
            return number is not None and OPERATORS[self.op](number, self.value)
        return OPERATORS[self.op](data[self.field], self.value)


#: The longest numeric string read as a number (an event's field or a client's filter value).
_MAX_NUMBER_CHARS = 64


def as_decimal(value: Any) -> Decimal | None:
    """``value`` as a finite number: an int, a float or a numeric string; None for anything else."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        return None
    if isinstance(value, str) and len(value) > _MAX_NUMBER_CHARS:
        return None
    try:
        number = Decimal(value) if isinstance(value, str) else Decimal(repr(value))
    except (InvalidOperation, ValueError):
        return None
    return number if number.is_finite() else None


#: Characters every JSON encoder writes as themselves (Go's escapes <, > and &; PHP's escapes /).
_PLAIN = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 -_.:@+,;=!#$%*()[]{}|~^?'")


def _needle(value: Any) -> bytes | None:
    """Bytes that any JSON encoding of an object with a field equal to ``value`` contains, or None."""
    if isinstance(value, tuple) and len(value) == 2 and value[0] == "bool":  # a match key
        value = value[1]
    if value is None or isinstance(value, bool):
        return b"null" if value is None else (b"true" if value else b"false")
    if isinstance(value, int) and abs(value) < 10**15:  # an equal float is written with these digits too
        return str(value).encode()
    if isinstance(value, str) and value and set(value) <= _PLAIN:
        return b'"' + value.encode() + b'"'
    return None


def raw_prefilter(conditions: Iterable[Condition]) -> Callable[[bytes], bool] | None:
    """A test on an event's raw JSON that is False only if the event cannot match ``conditions``.

    For reading history, where most events may not match: a substring search
    is far cheaper than decoding. Only ``eq`` and ``in`` on plain values give
    needles; None when no condition does (then every event is decoded).
    """
    groups: list[tuple[bytes, ...]] = []
    for condition in conditions:
        if condition.numeric:
            continue  # "20" is in the raw JSON neither of 20.0 nor of "2E+1": no needle
        values = (condition.value,) if condition.op == "eq" else condition.value if condition.op == "in" else None
        if not isinstance(values, (tuple, list, frozenset)):
            continue
        needles = [_needle(v) for v in values]
        if needles and all(n is not None for n in needles):
            groups.append(tuple(n for n in needles if n is not None))
    if not groups:
        return None

    def test(raw: bytes) -> bool:
        return all(any(n in raw for n in needles) for needles in groups)

    return test


_SCALARS = (str, int, float, bool, type(None))

#: The declarable field types, by their JSON names.
JSON_TYPES: dict[type, str] = {int: "an integer", float: "a number", str: "a string", bool: "a boolean",
                               Decimal: "a decimal (a number or a numeric string)"}


def json_type_name(value: Any) -> str:
    if value is None:
        return "null"
    for kind in (bool, int, float, str):
        if isinstance(value, kind):
            return JSON_TYPES[kind]
    return type(value).__name__


def can_match(value: Any, declared: type | tuple[type, ...]) -> bool:
    """Whether a filter value of this JSON type can ever equal a field of the declared type.

    Filters are type-strict (``"36"`` never matches ``36``, ``true`` never
    ``1``), so a value of another type would silently match nothing.
    ``null`` can always match (a field may be null); a ``float`` field
    takes integers too; a ``Decimal`` field, numbers and numeric strings.
    """
    if value is None:
        return True
    kinds = declared if isinstance(declared, tuple) else (declared,)
    if Decimal in kinds and as_decimal(value) is not None:
        return True
    if isinstance(value, bool):
        return bool in kinds
    if isinstance(value, int):
        return int in kinds or float in kinds
    return any(isinstance(value, k) and k is not bool for k in kinds)


TYPED_OPS = frozenset({"eq", "ne", "in", "gt", "gte", "lt", "lte"})


def parse(raw: Any, entity: str, allowed_ops: Mapping[str, list[str]] | None,
          field_types: Mapping[str, type | tuple[type, ...]], max_in_values: int) -> list[Condition]:
    """``raw`` (``{"field__op": value}``) as conditions, or :class:`FilterError`. ``allowed_ops``: the
    operators each field allows (None: any field, any operator, as for a server's own filters)."""
    if raw is None:
        return []
    if not isinstance(raw, Mapping):
        raise FilterError("filters must be an object of field__op: value")
    conditions = []
    for key, value in raw.items():
        if not isinstance(key, str) or not key:
            raise FilterError(f"invalid filter key {key!r}")
        field, _, op = key.partition("__")
        op = op or "eq"
        if op not in OPERATORS:
            raise FilterError(f"unknown operator {op!r} in {key!r}; known: {', '.join(sorted(OPERATORS))}")
        if allowed_ops is not None:
            allowed = allowed_ops.get(field)
            if allowed is None:
                known = ", ".join(sorted(allowed_ops)) or "none"
                raise FilterError(f"{entity} cannot be filtered by {field!r}; allowed: {known}")
            if op not in allowed:
                raise FilterError(f"{entity}.{field} does not allow {op!r}; allowed: {', '.join(allowed)}")
        if op == "in":
            if not isinstance(value, list) or not all(isinstance(v, _SCALARS) for v in value):
                raise FilterError(f"{key!r} needs a list of scalar values")
            if len(value) > max_in_values:
                raise FilterError(f"{key!r} has {len(value)} values; the limit is {max_in_values}")
            if all(isinstance(v, (str, int, float, bool)) for v in value):
                value = frozenset(match_key(v) for v in value)
        elif op in ("contains", "icontains"):
            if not isinstance(value, str) and op == "icontains":
                raise FilterError(f"{key!r} needs a string")
        elif not isinstance(value, _SCALARS):
            raise FilterError(f"{key!r} needs a scalar value")
        declared_type = field_types.get(field) if op in TYPED_OPS else None
        if declared_type is not None:
            for item in raw[key] if op == "in" else [value]:
                if not can_match(item, declared_type):
                    kinds = declared_type if isinstance(declared_type, tuple) else (declared_type,)
                    raise FilterError(
                        f"{entity}.{field} is {' or '.join(JSON_TYPES.get(k, k.__name__) for k in kinds)}; "
                        f"{item!r} ({json_type_name(item)}) can never match it"
                    )
        if declared_type is not None and Decimal in (declared_type if isinstance(declared_type, tuple)
                                                     else (declared_type,)):
            conditions.append(_numeric(field, op, raw[key], entity))
        else:
            conditions.append(Condition(field, op, value))
    return conditions


def _numeric(field: str, op: str, raw: Any, entity: str) -> Condition:
    """A condition on a ``Decimal`` field: its values as numbers (``null`` in an ``in`` list matches nothing)."""
    if raw is None:
        return Condition(field, op, None)  # eq / ne null: as for any field
    items = raw if op == "in" else [raw]
    numbers = [as_decimal(v) for v in items if v is not None]
    if any(n is None for n in numbers):
        raise FilterError(f"{entity}.{field} is a decimal; {raw!r} is not a number")
    values = [n for n in numbers if n is not None]
    return Condition(field, op, frozenset(values) if op == "in" else (values[0] if values else None), numeric=True)
