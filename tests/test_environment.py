"""The development environment is the lock: every package in ``.venv`` is pinned in ``requirements/dev.txt``
at the installed version, and every pin is installed. ``make test`` rebuilds the venv when the lock changes,
so this only fails for a venv that was changed by hand."""

from __future__ import annotations

import os
import re
from importlib import metadata
from pathlib import Path

import pytest

LOCK = Path(__file__).resolve().parent.parent / "requirements" / "dev.txt"
#: Installed by ``python -m venv`` itself or by the editable install, not by the lock.
NOT_LOCKED = {"pip", "supergraph-messaging"}

pytestmark = pytest.mark.skipif(bool(os.environ.get("SGM_UNLOCKED_ENV")),
                                reason="make test-matrix resolves its own versions")


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _locked() -> dict[str, str]:
    pins = re.findall(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s\\;]+)", LOCK.read_text(), flags=re.MULTILINE)
    return {_canonical(name): version for name, version in pins}


def _installed() -> dict[str, str]:
    return {_canonical(dist.metadata["Name"]): dist.version for dist in metadata.distributions()}


def test_the_venv_holds_exactly_the_lock() -> None:
    locked, installed = _locked(), _installed()
    for name in NOT_LOCKED:
        installed.pop(name, None)
    assert installed == locked
