"""Map a call's arguments to parameter names, fast, for key templates.

``inspect.Signature.bind`` costs microseconds per call; a cache hit costs
tens. So the signature is analysed once and each call does only dict work.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from supergraph_messaging.exceptions import CacheKeyError


class ArgBinder:
    __slots__ = ("defaults", "func_name", "keyword_names", "positional", "signature", "var_keyword")

    def __init__(self, func: Callable[..., Any]) -> None:
        self.signature = inspect.signature(func)
        self.func_name = getattr(func, "__qualname__", repr(func))
        self.positional: list[str] = []
        self.defaults: dict[str, Any] = {}
        self.var_keyword = False
        for param in self.signature.parameters.values():
            if param.kind in (param.POSITIONAL_ONLY, param.POSITIONAL_OR_KEYWORD):
                self.positional.append(param.name)
            elif param.kind == param.VAR_KEYWORD:
                self.var_keyword = True
            if param.default is not param.empty:
                self.defaults[param.name] = param.default
        self.keyword_names = frozenset(
            p.name
            for p in self.signature.parameters.values()
            if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
        )

    def bind(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
        """Parameter name → value, defaults applied (positional and keyword calls agree)."""
        if len(args) > len(self.positional) or (kwargs and not kwargs.keys() <= self.keyword_names):
            return self._slow(args, kwargs)
        values = dict(self.defaults)
        values.update(zip(self.positional, args, strict=False))
        if kwargs:
            values.update(kwargs)
        return values

    def _slow(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
        try:
            bound = self.signature.bind(*args, **kwargs)
        except TypeError as exc:
            raise CacheKeyError(f"{self.func_name}(): {exc}") from exc
        bound.apply_defaults()
        values = dict(bound.arguments)
        for param in self.signature.parameters.values():
            if param.kind == param.VAR_KEYWORD:
                values.update(values.pop(param.name, {}))
        return values
