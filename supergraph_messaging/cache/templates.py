"""Key templates (``camera:mac:{mac_address}``): the keys a ``@redis_cache`` or ``CacheSync`` writes, filled
from call arguments or from an event's payload, and matched by pattern when a placeholder is missing.
"""

from __future__ import annotations

import re
import string
from collections.abc import Mapping
from typing import Any

from supergraph_messaging.exceptions import CacheKeyError
from supergraph_messaging.redis.keys import escape_glob

_formatter = string.Formatter()


class KeyTemplate:
    """A parsed ``"camera:mac:{mac_address}"`` template.

    Parsed once at decoration time so that filling it on the hot path is a
    plain ``str.format`` call.
    """

    __slots__ = ("fields", "parts", "roots", "template")

    def __init__(self, template: str) -> None:
        self.template = template
        fields: list[str] = []
        for _literal, field, spec, conversion in _formatter.parse(template):
            if field is None:
                continue
            if field == "" or field.isdigit():
                raise ValueError(
                    f"Key template {template!r} uses a positional placeholder; name it "
                    "after a parameter, e.g. {mac_address}."
                )
            if spec or conversion:
                raise ValueError(f"Key template {template!r}: format specs are not supported.")
            fields.append(field)
        self.fields = tuple(fields)
        #: (literal, field or None, root of the field or None) in order, for building keys and patterns.
        self.parts = tuple(
            (literal, field, re.split(r"[.\[]", field, maxsplit=1)[0] if field is not None else None)
            for literal, field, _spec, _conv in _formatter.parse(template)
        )
        self.roots = tuple(dict.fromkeys(re.split(r"[.\[]", f, maxsplit=1)[0] for f in fields))

    def __repr__(self) -> str:
        return f"KeyTemplate({self.template!r})"

    def fill(self, values: Mapping[str, Any]) -> str:
        try:
            return self.template.format_map(values)
        except (KeyError, AttributeError, IndexError, TypeError) as exc:
            missing = [r for r in self.roots if r not in values]
            name = missing[0] if missing else exc.args[0] if exc.args else exc
            raise CacheKeyError(
                f"Cannot fill placeholder {name!r} of key template {self.template!r}: {exc!r}"
            ) from exc

    def try_fill(self, values: Mapping[str, Any]) -> str | None:
        """Fill from an event payload, or ``None`` when a placeholder is missing."""
        if any(r not in values or values[r] is None for r in self.roots):
            return None
        try:
            return self.template.format_map(values)
        except (KeyError, AttributeError, IndexError, TypeError):
            return None

    def pattern(self, values: Mapping[str, Any] | None = None) -> str:
        """A glob matching every key of the template; known values escaped."""
        values = values or {}
        out: list[str] = []
        for literal, field, _spec, _conv in _formatter.parse(self.template):
            out.append(escape_glob(literal))
            if field is None:
                continue
            root = re.split(r"[.\[]", field, maxsplit=1)[0]
            if field == root and values.get(root) is not None:
                out.append(escape_glob(str(values[root])))
            else:
                out.append("*")
        return "".join(out)
