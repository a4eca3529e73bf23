"""``Setting``: one key of ``SUPERGRAPH_MESSAGING``, declared once as a typed, memoised attribute."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Generic, TypeVar, overload

if TYPE_CHECKING:
    from supergraph_messaging.conf import Settings

_T = TypeVar("_T")


class Setting(Generic[_T]):
    """One key of ``SUPERGRAPH_MESSAGING``: its default, what a valid value is (in words and as a predicate),
    its check id and documentation, and how it reads as a Python value (``convert``).

    Declared once, as an attribute of :class:`Settings`, which it serves as a
    typed, memoised property; :data:`SETTINGS`, the system checks and
    ``docs/settings.md`` are all derived from those declarations.
    """

    def __init__(self, default: Any, expected: str, valid: Callable[[Any], bool],
                 check_id: str = "supergraph_messaging.E007", doc: str = "", *,
                 convert: Callable[[Any], _T], key: str = "") -> None:
        self.default = default
        self.expected = expected
        self.valid = valid
        self.check_id = check_id
        self.doc = doc
        self.convert = convert
        self.key = key
        self.attr = ""

    def __set_name__(self, owner: type, name: str) -> None:
        self.attr = name
        self.key = self.key or name.upper()

    @overload
    def __get__(self, obj: None, owner: type) -> Setting[_T]: ...

    @overload
    def __get__(self, obj: Settings, owner: type) -> _T: ...

    def __get__(self, obj: Settings | None, owner: type) -> Setting[_T] | _T:
        if obj is None:
            return self
        value: _T = self.convert(obj._get(self.key))
        # Into the instance's own dict: from now on an attribute read that never calls this (a Setting
        # has no __set__, so the instance dict wins), cheap on the cache-hit path; Settings.clear() drops it.
        obj.__dict__[self.attr] = value
        return value

    def __repr__(self) -> str:
        return f"Setting({self.key}={self.default!r})"
