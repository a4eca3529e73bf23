"""Hide every installed distribution the documented install line would not bring.

On ``PYTHONPATH``, this runs at interpreter start-up in the walkthrough's
processes (tests/test_walkthrough.py): ``SGM_HIDDEN_MODULES`` names the
top-level modules of distributions outside the install line's closure, and
importing one fails as it would in a virtualenv holding only that line. An
optional import (``try: import yaml``) then takes its fallback, and a needed one
fails the process, naming the module.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from importlib.machinery import ModuleSpec
from types import ModuleType

HIDDEN = frozenset(filter(None, os.environ.get("SGM_HIDDEN_MODULES", "").split(",")))


class InstallLineOnly:
    @staticmethod
    def find_spec(name: str, path: Sequence[str] | None = None,
                  target: ModuleType | None = None) -> ModuleSpec | None:
        if path is None and name.partition(".")[0] in HIDDEN:
            raise ModuleNotFoundError(f"No module named {name!r} (the install line does not bring it)", name=name)
        return None


if HIDDEN:
    sys.meta_path.insert(0, InstallLineOnly())
