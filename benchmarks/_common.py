"""Shared set-up for the benchmarks: a private redis-server and minimal Django settings."""

from __future__ import annotations

import os
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.support.redis_server import RedisServer  # noqa: E402


def start_redis() -> RedisServer:
    server = RedisServer()
    server.start()
    return server


def setup_django(redis_url: str, **extra: object) -> None:
    import django
    from django.conf import settings

    if settings.configured:
        return
    settings.configure(
        SECRET_KEY="bench",
        USE_TZ=True,
        INSTALLED_APPS=[
            "django.contrib.contenttypes",
            "django.contrib.auth",
            "rest_framework",
            "supergraph_messaging",
            *extra.pop("APPS", []),  # type: ignore[misc]
        ],
        CACHES={"default": {"BACKEND": "django_redis.cache.RedisCache", "LOCATION": redis_url,
                            # Plain keys, so django-redis and we see the same keyspace.
                            "KEY_FUNCTION": "_common.plain_key"}},
        DATABASES={"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}},
        **extra,
    )
    django.setup()


def setup_test_project(server: RedisServer, database: str = "sqlite") -> None:
    """Django with the test suite's settings and apps, on ``server`` and a fresh database, migrated:
    a SQLite file, or (``database="postgres"``) a new database on 127.0.0.1:5432, dropped at exit."""
    import logging
    import tempfile

    os.environ["SGM_TEST_REDIS_PORT"] = str(server.port)
    os.environ["SGM_TEST_DB_NAME"] = os.path.join(tempfile.mkdtemp(), "bench.sqlite3")
    if database == "postgres":
        import atexit

        import psycopg

        name = f"sgm_bench_{os.getpid()}"
        admin = psycopg.connect("host=127.0.0.1 port=5432 user=postgres dbname=postgres", autocommit=True)
        admin.execute(f'CREATE DATABASE "{name}"')
        atexit.register(lambda: admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        os.environ["SGM_TEST_PG_DB"] = name
    os.environ["DJANGO_SETTINGS_MODULE"] = "tests.support.settings"
    os.chdir(ROOT)
    import django

    django.setup()
    logging.getLogger("supergraph_messaging").setLevel(logging.WARNING)
    from django.core.management import call_command

    call_command("migrate", verbosity=0)


BATCH = 500


def cached_lookups(prefix: str, value: Any) -> tuple[Callable[[str], Any], Callable[[str], Any]]:
    """``@redis_cache`` lookups returning ``value``: one in Redis, one near-cached (``local=True``)."""
    from supergraph_messaging import redis_cache

    @redis_cache(key=f"{prefix}:mac:{{mac}}")
    def lookup(mac: str) -> Any:
        return value

    @redis_cache(key=f"{prefix}:near:{{mac}}", local=True)
    def near(mac: str) -> Any:
        return value

    return lookup, near


def per_op_us(fn: Callable[[], Any], n: int) -> float:
    start = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - start) / n * 1e6


def interleaved(variants: dict[str, Callable[[], Any]], n: int, batch: int = BATCH) -> dict[str, float]:
    """Median per-op time of each variant over alternating batches (cancels machine drift)."""
    samples: dict[str, list[float]] = {k: [] for k in variants}
    for _ in range(n // batch):
        for name, fn in variants.items():
            samples[name].append(per_op_us(fn, batch))
    return {k: median(v) for k, v in samples.items()}


def plain_key(key: str, key_prefix: str, version: int) -> str:
    return key


def pct(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def option(name: str, default: str) -> str:
    """``--name=value`` from the command line."""
    for arg in sys.argv[1:]:
        if arg.startswith(f"--{name}="):
            return arg.split("=", 1)[1]
    return default


def runs_arg(default: int = 3) -> int:
    for arg in sys.argv[1:]:
        if arg.startswith("--runs="):
            return int(arg.split("=", 1)[1])
    return int(os.environ.get("BENCH_RUNS", default))
