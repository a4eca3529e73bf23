"""Settings for the test suite: a real Redis (started by tests.support.redis_server) and SQLite."""

from __future__ import annotations

import json
import os
from pathlib import Path

from tests.support.ports import session_port

BASE_DIR = Path(__file__).resolve().parents[2]
SECRET_KEY = "tests-only-not-secret"
DEBUG = False
ALLOWED_HOSTS = ["testserver", "localhost", "127.0.0.1"]
USE_TZ = True
TIME_ZONE = "UTC"

REDIS_PORT = session_port()
REDIS_URL = f"redis://127.0.0.1:{REDIS_PORT}/0"

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework.authtoken",
    "channels",
    "supergraph_messaging",
    "tests.testapp",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
]

ROOT_URLCONF = "tests.support.urls"
ASGI_APPLICATION = "tests.support.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ]
        },
    }
]

_DB = os.environ.get("SGM_TEST_DB_NAME", str(BASE_DIR / ".test-db.sqlite3"))
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": _DB,
        "TEST": {"NAME": _DB},
        # Transactions take the write lock up front: with the outbox relay beside them, a deferred one
        # that reads and then writes would fail with "database is locked" (check W303). WAL: readers
        # (the relay's) wait for no writer.
        "OPTIONS": {"timeout": 20, "transaction_mode": "IMMEDIATE", "init_command": "PRAGMA journal_mode=WAL"},
    }
}

if os.environ.get("SGM_TEST_PG_DB"):  # the durability harness on PostgreSQL: its processes share this database
    DATABASES = {"default": {"ENGINE": "django.db.backends.postgresql", "NAME": os.environ["SGM_TEST_PG_DB"],
                             "HOST": "127.0.0.1", "PORT": "5432", "USER": "postgres"}}

CACHES = {
    "default": {
        "BACKEND": "django_redis.cache.RedisCache",
        "LOCATION": REDIS_URL,
        "OPTIONS": {"SOCKET_CONNECT_TIMEOUT": 0.5, "SOCKET_TIMEOUT": 1.0},
    }
}

CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}

SUPERGRAPH_MESSAGING = {
    "DEFAULT_TTL": 3600,
    # The admin tests browse arbitrary keys; tests/security/ checks the default namespace.
    "ADMIN_KEY_PATTERNS": ["*"],
    # Durable-delivery tests switch worker subprocesses with SGM_DELIVERY=durable.
    "DELIVERY": os.environ.get("SGM_DELIVERY", "pubsub"),
    "SERVICE_NAME": "tests",
    "CLAIM_IDLE": float(os.environ.get("SGM_CLAIM_IDLE", "60")),
    # End-to-end tests start daphne with short ping timings to see 4008 quickly.
    "WS_PING_INTERVAL": float(os.environ.get("SGM_WS_PING_INTERVAL", "20")),
    "WS_PONG_TIMEOUT": float(os.environ.get("SGM_WS_PONG_TIMEOUT", "20")),
    "WS_AUTH_RECHECK_INTERVAL": float(os.environ.get("SGM_WS_AUTH_RECHECK", "60")),
    # The worker attack tests give handlers a deadline and SIGTERM a short grace.
    "HANDLER_TIMEOUT": float(os.environ["SGM_HANDLER_TIMEOUT"]) if os.environ.get("SGM_HANDLER_TIMEOUT") else None,
    "SHUTDOWN_TIMEOUT": float(os.environ.get("SGM_SHUTDOWN_TIMEOUT", "30")),
    # The health page's sampler writes to Redis once per interval from any process that counts: off in
    # the suite (the admin's key listings count keys), on where a test asks for it.
    "HEALTH_SAMPLE_INTERVAL": None,
}
# The gateway tests run this project in three roles: the service owning tests.testapp's entities (the
# default), a second service (tests.beacon) and a gateway federating both (no entities of its own).
ROLE = os.environ.get("SGM_TEST_ROLE", "service")
if os.environ.get("SGM_SERVICE_TOKEN"):  # a service's token, or a gateway's {service: token} as JSON
    token = os.environ["SGM_SERVICE_TOKEN"]
    SUPERGRAPH_MESSAGING["SERVICE_TOKEN"] = json.loads(token) if token.startswith("{") else token
if ROLE != "service":
    # The gateway authenticates users itself, from the test database's sessions and DRF tokens (the users
    # the services know too); it has none of the services' code. The beacon has no users.
    keep = ("rest_framework.authtoken",) if ROLE == "gateway" else ()
    INSTALLED_APPS = [app for app in INSTALLED_APPS
                      if app not in ("tests.testapp", "rest_framework.authtoken") or app in keep]
    INSTALLED_APPS += ["tests.beacon"] if ROLE == "beacon" else []
    ROOT_URLCONF = "tests.support.service_urls"
if ROLE == "gateway":
    SUPERGRAPH_MESSAGING["GATEWAY_SERVICES"] = json.loads(os.environ["SGM_GATEWAY_SERVICES"])
    SUPERGRAPH_MESSAGING["GATEWAY_REFRESH_INTERVAL"] = float(os.environ.get("SGM_GATEWAY_REFRESH", "30"))
    SUPERGRAPH_MESSAGING["GATEWAY_TIMEOUT"] = 1.0
    SUPERGRAPH_MESSAGING["SCHEMA_ACCESS"] = "public"  # the services' own (staff) is stricter: it applies
if os.environ.get("SGM_REDIS_URL"):  # a worker subprocess of a test on Sentinel or Cluster (tests/conftest.py)
    SUPERGRAPH_MESSAGING["REDIS_URL"] = os.environ["SGM_REDIS_URL"]

STATIC_URL = "/static/"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
REST_FRAMEWORK = {"DEFAULT_AUTHENTICATION_CLASSES": ["rest_framework.authentication.SessionAuthentication"]}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "loggers": {"supergraph_messaging": {"handlers": ["console"], "level": "INFO"}},
}
if os.environ.get("SGM_TEST_TRACE_FILE"):  # tests/operations/test_tracing.py: the SDK, before the app registers
    from tests.support.tracing import configure

    configure(os.environ["SGM_TEST_TRACE_FILE"])
