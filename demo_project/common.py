"""What every demo service shares (Redis, the service token, templates, logging), and one service's settings.

Each service's ``demo_project/<service>/settings.py`` is
``globals().update(service_settings(name, its apps))`` plus what is its own:
its apps, URLs, database, cookies and service name differ; the services
share no database and no code path, only Redis and HTTP.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

BASE_DIR = Path(__file__).resolve().parent
DATA_DIR = Path(os.environ.get("DEMO_DATA_DIR", str(BASE_DIR / "data")))
SECRET_KEY = os.environ.get("DEMO_SECRET_KEY", "demo-only-not-secret")
DEBUG = os.environ.get("DEMO_DEBUG", "") == "1"
ALLOWED_HOSTS = ["127.0.0.1", "localhost", "testserver"]
USE_TZ = True
TIME_ZONE = "UTC"

REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6399/0")
# Each service's secret with the gateway (/__schema, /__authorize, the key of the gateway's user assertions):
# one per service, so that one compromised service cannot pass for the gateway at another. Real ones come
# from a vault.
_TOKEN_BASE = os.environ.get("DEMO_SERVICE_TOKEN", "demo-only-service-token-not-secret-0123")


def service_token(service: str) -> str:
    return f"{_TOKEN_BASE}-{service}"


HOST = "127.0.0.1"
PORTS = dict(zip(("gateway", "access_control", "events", "notifications"),
                 map(int, os.environ.get("DEMO_PORTS", "8000,8001,8002,8003").split(",")), strict=True))
URLS = {name: f"http://{HOST}:{port}" for name, port in PORTS.items()}

BASE_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "channels",
    "supergraph_messaging",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
]

TEMPLATES = [{
    "BACKEND": "django.template.backends.django.DjangoTemplates",
    "DIRS": [BASE_DIR / "templates"],
    "APP_DIRS": True,
    "OPTIONS": {"context_processors": [
        "django.template.context_processors.request",
        "django.contrib.auth.context_processors.auth",
        "django.contrib.messages.context_processors.messages",
    ]},
}]

CACHES = {"default": {
    "BACKEND": "django_redis.cache.RedisCache",
    "LOCATION": REDIS_URL,
    "OPTIONS": {"SOCKET_CONNECT_TIMEOUT": 0.5, "SOCKET_TIMEOUT": 1.0},
}}

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": ["rest_framework.authentication.SessionAuthentication"],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.AllowAny"],
}

STATIC_URL = "/static/"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "loggers": {
        "supergraph_messaging": {"handlers": ["console"], "level": "INFO"},
        "demo": {"handlers": ["console"], "level": "INFO"},
    },
}


def database(service: str) -> dict[str, Any]:
    """The service's own SQLite file."""
    return {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": str(DATA_DIR / f"{service}.sqlite3"),
                        "OPTIONS": {"timeout": 20, "transaction_mode": "IMMEDIATE",
                                    "init_command": "PRAGMA journal_mode=WAL"}}}


def messaging(service: str, **more: Any) -> dict[str, Any]:
    """SUPERGRAPH_MESSAGING of a service: durable delivery under its own name, readable by the gateway.

    Durable: every change is written to the outbox with the change, relayed by the service's
    messaging_listen and consumed through consumer groups (nothing lost across restarts); WebSocket
    clients can resume. /__schema and /__asyncapi are public in the demo (the default is staff only).
    """
    return {"DEFAULT_TTL": 3600, "DELIVERY": "durable", "SERVICE_NAME": service, "SCHEMA_ACCESS": "public",
            "SERVICE_TOKEN": service_token(service), **more}  # a gateway passes its own dict in ``more``


def service_settings(service: str, *apps: str, **messaging_settings: Any) -> dict[str, Any]:
    """Every Django setting of one demo service."""
    return {
        "ALLOWED_HOSTS": ALLOWED_HOSTS, "CACHES": CACHES, "DEBUG": DEBUG, "DEFAULT_AUTO_FIELD": DEFAULT_AUTO_FIELD,
        "LOGGING": LOGGING, "MIDDLEWARE": MIDDLEWARE, "REST_FRAMEWORK": REST_FRAMEWORK, "SECRET_KEY": SECRET_KEY,
        "STATIC_URL": STATIC_URL, "TEMPLATES": TEMPLATES, "TIME_ZONE": TIME_ZONE, "USE_TZ": USE_TZ,
        "INSTALLED_APPS": [*BASE_APPS, *apps],
        "ROOT_URLCONF": f"demo_project.{service}.urls",
        "ASGI_APPLICATION": "demo_project.asgi.application",
        "DATABASES": database(service),
        # Browsers share cookies across the ports of one host: each service names its own.
        "SESSION_COOKIE_NAME": f"{service}_sessionid",
        "CSRF_COOKIE_NAME": f"{service}_csrftoken",
        "SUPERGRAPH_MESSAGING": messaging(service, **messaging_settings),
    }
