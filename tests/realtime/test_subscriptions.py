from __future__ import annotations

from decimal import Decimal

import pytest

from supergraph_messaging.realtime.filters import Condition, FilterError
from supergraph_messaging.realtime.hub import ChannelRoutes, Route
from supergraph_messaging.realtime.subscriptions import Subscription


class Sink:
    def deliver(self, route: Route, channel: str, data_json: str) -> None: ...

    def gap(self, route: Route) -> None: ...


class Things(Subscription):
    entity = "ThingsForUnitTests"
    channels = ["things"]
    filters = {"n": ["eq", "in", "ne", "gt"], "flag": ["eq"]}


def routes_for(filters: dict) -> tuple[ChannelRoutes, Route]:
    route = Route(Sink(), "1", Things.entity, Things.channels, Things.parse_filters(filters, 100), None)
    routes = ChannelRoutes()
    routes.add(route)
    return routes, route


@pytest.mark.parametrize(("filters", "event", "expected"), [
    ({"n": 1}, {"n": 1}, True),
    ({"n": 1}, {"n": True}, False),  # JSON true is not 1
    ({"n": True}, {"n": 1}, False),
    ({"n__in": [1, 2]}, {"n": True}, False),
    ({"n__in": [True]}, {"n": True}, True),
    ({"n__in": [1, 2]}, {"n": 2.0}, True),
    ({"n__ne": 1}, {"n": True}, True),
    ({"n": 1}, {"m": 1}, False),
    ({"n__gt": 1}, {"n": "x"}, False),  # another shape never matches, never raises
])
def test_matching_is_json_strict_and_index_agrees(filters: dict, event: dict, expected: bool) -> None:
    routes, route = routes_for(filters)
    candidates = routes.candidates(event)
    assert route.matches(event) is expected
    assert (route in candidates and route.matches(event)) is expected


class Prices(Subscription):
    entity = "PricesForUnitTests"
    channels = ["prices"]
    filters = {"price": ["eq", "in", "lt", "gte"], "sku": ["eq"]}
    field_types = {"price": Decimal, "sku": str}


@pytest.mark.parametrize(("filters", "event", "expected"), [
    ({"price__lt": 20}, {"price": "19.99"}, True),  # DRF writes a DecimalField as a string
    ({"price__lt": 20}, {"price": "20.00"}, False),
    ({"price__lt": "20"}, {"price": 19.5}, True),  # a number, or a numeric string, either side
    ({"price__gte": 20.5}, {"price": "20.50"}, True),
    ({"price": 20}, {"price": "20.00"}, True),  # eq is numeric too, and the index agrees
    ({"price__in": [10, "20.5"]}, {"price": "20.50"}, True),
    ({"price__in": [10, "20.5"]}, {"price": "10"}, True),
    ({"price__in": [10, "20.5"]}, {"price": "11"}, False),
    ({"price__lt": 20}, {"price": "cheap"}, False),  # not a number: no match, never an error
    ({"price__lt": 20}, {"price": True}, False),
    ({"price__lt": 20}, {"price": None}, False),
    ({"price__lt": 20}, {"price": "1" * 100}, False),  # longer than any price: not read as a number
    ({"price": None}, {"price": None}, True),  # eq null: as for any field
    ({"sku": "20"}, {"sku": 20}, False),  # a field not declared Decimal stays JSON-strict
])
def test_a_decimal_field_compares_as_a_number(filters: dict, event: dict, expected: bool) -> None:
    route = Route(Sink(), "1", Prices.entity, Prices.channels, Prices.parse_filters(filters, 100), None)
    routes = ChannelRoutes()
    routes.add(route)
    assert route.matches(event) is expected
    assert (route in routes.candidates(event) and route.matches(event)) is expected


def test_a_decimal_filter_that_is_no_number_is_refused_and_has_no_raw_needle() -> None:
    from supergraph_messaging.realtime.filters import raw_prefilter

    for bad in ("cheap", True, ["1", "x"], "nan", "Infinity"):
        with pytest.raises(FilterError, match=r"PricesForUnitTests\.price is a decimal"):
            Prices.parse_filters({"price__in" if isinstance(bad, list) else "price__lt": bad}, 100)
    assert raw_prefilter(Prices.parse_filters({"price": 20}, 100)) is None  # "20" is not in '"price":"2E+1"'
    assert raw_prefilter(Prices.parse_filters({"price": 20, "sku": "A"}, 100)) is not None
    from supergraph_messaging.realtime.subscriptions import describe

    assert describe([Prices])[0]["field_types"]["price"] == ["a decimal (a number or a numeric string)"]


def test_remove_cleans_the_index() -> None:
    routes, route = routes_for({"n__in": [1, 2]})
    routes.remove(route)
    assert routes.index == {} and routes.count == 0


def test_parse_errors_name_the_problem() -> None:
    with pytest.raises(FilterError, match="'secret'"):
        Things.parse_filters({"secret": 1}, 100)
    with pytest.raises(FilterError, match="limit is 2"):
        Things.parse_filters({"n__in": [1, 2, 3]}, 2)
    assert Things.parse_filters({"n": 1}, 100) == [Condition("n", "eq", 1)]


def test_system_checks_unknown_operator_and_duplicate_entity() -> None:
    from supergraph_messaging.checks import check_subscriptions
    from supergraph_messaging.realtime import subscriptions

    assert check_subscriptions() == []

    class BadOps(Subscription):
        entity = "BadOpsForChecks"
        channels = ["x"]
        filters = {"n": ["eq", "regex"]}

    class Dup(Subscription):
        entity = "ThingsForUnitTests"
        channels = ["y"]

    try:
        messages = check_subscriptions()
        assert [m.id for m in messages] == ["supergraph_messaging.E201", "supergraph_messaging.E202"]
        assert "'regex'" in messages[0].msg and "Things" in messages[1].msg and "Dup" in messages[1].msg
    finally:
        subscriptions.registry[:] = [c for c in subscriptions.registry if c not in (BadOps, Dup)]


def _declare(**attrs: object) -> type[Subscription]:
    """A Subscription class for one test, taken out of the registry again."""
    from supergraph_messaging.realtime.subscriptions import registry

    cls = type("Declared", (Subscription,), {"entity": "DeclaredForUnitTests", "channels": ["x"], **attrs})
    registry.remove(cls)
    return cls


def test_filters_value_must_be_a_list() -> None:
    problems = _declare(filters={"camera_id": "eq"}).check()
    assert len(problems) == 1
    assert "must be a list of operators" in problems[0] and "['eq']" in problems[0]


def test_hooks_written_as_instance_methods_are_flagged() -> None:
    def get_server_filters(self: object, user: object) -> dict[str, object]:
        return {}

    def has_permission(self: object, user: object) -> bool:
        return True

    problems = _declare(get_server_filters=get_server_filters, has_permission=has_permission).check()
    assert [p.split(" must")[0] for p in problems] == ["Declared.get_server_filters", "Declared.has_permission"]
    assert _declare(get_server_filters=staticmethod(lambda user: {})).check() == []


def test_redeclaring_a_class_replaces_it_in_the_registry() -> None:
    from supergraph_messaging.realtime.subscriptions import registry

    before = len(registry)
    for _ in range(3):
        type("Again", (Subscription,), {"entity": "AgainForUnitTests", "channels": ["x"], "__module__": "m"})
    assert len(registry) == before + 1
    registry.pop()


class Typed(Subscription):
    entity = "TypedForUnitTests"
    channels = ["typed"]
    filters = {"camera_id": ["eq", "in", "gt"], "score": ["gte"], "kind": ["eq", "contains"], "on": ["eq"]}
    field_types = {"camera_id": int, "score": float, "kind": str, "on": bool}


@pytest.mark.parametrize(("filters", "problem"), [
    ({"camera_id": "36"}, "TypedForUnitTests.camera_id is an integer; '36' (a string) can never match it"),
    ({"camera_id__in": [1, "2"]}, "'2' (a string)"),
    ({"camera_id": True}, "True (a boolean)"),
    ({"camera_id__gt": 1.5}, "1.5 (a number)"),
    ({"kind": 3}, "3 (an integer)"),
    ({"on": 1}, "TypedForUnitTests.on is a boolean; 1 (an integer)"),
])
def test_declared_types_refuse_filters_that_can_never_match(filters: dict, problem: str) -> None:
    with pytest.raises(FilterError) as excinfo:
        Typed.parse_filters(filters, 100)
    assert problem in str(excinfo.value)


def test_declared_types_accept_what_can_match() -> None:
    for filters in ({"camera_id": 36}, {"camera_id__in": [1, 2]}, {"camera_id": None}, {"score__gte": 2},
                    {"score__gte": 2.5}, {"kind": "motion"}, {"kind__contains": "mo"}, {"on": False}):
        assert Typed.parse_filters(filters, 100)
    assert Typed.check() == []
    assert "field_types" in _declare(field_types={"nope": int}).check()[0]
    declared_list = _declare(filters={"a": ["eq"]}, field_types={"a": list})
    assert "must be int, float, str, bool or Decimal" in declared_list.check()[0]


def test_a_gateway_keeps_a_services_decimal_field() -> None:
    """A service's /__schema names the type; the gateway's class compares the same way as the service's."""
    from supergraph_messaging.gateway.remote import remote_class
    from supergraph_messaging.realtime.subscriptions import registry

    described = {"entity": "RemotePricesForUnitTests", "channels": ["remote.prices"], "filters": {"price": ["lt"]},
                 "field_types": {"price": ["a decimal (a number or a numeric string)"]}}
    cls = remote_class("svc", described)
    try:
        [condition] = cls.parse_filters({"price__lt": "20"}, 100)
        assert condition.numeric and condition.matches({"price": "19.99"}) and not condition.matches({"price": "20"})
    finally:
        registry[:] = [c for c in registry if c is not cls]


def test_access_is_decided_on_the_event_loop_only_when_it_reads_nothing_but_the_user() -> None:
    """A subscribe's permission check runs in Channels' one database thread unless it cannot touch the
    database: base hooks and only DRF's user-only permission classes (a storm queued behind it)."""
    from rest_framework.permissions import BasePermission, DjangoModelPermissions, IsAdminUser

    from supergraph_messaging.realtime.subscriptions import _decides_on_loop
    from tests.testapp.subscriptions import CameraEventsSubscription, SecretSubscription, TenantSubscription

    class ReadsTheDatabase(BasePermission):
        pass

    class Admins(Subscription):
        permission_classes = [IsAdminUser]

    class Custom(Subscription):
        permission_classes = [ReadsTheDatabase]

    class ModelPerms(Subscription):
        permission_classes = [DjangoModelPermissions]

    class OwnHook(Subscription):
        @classmethod
        def has_permission(cls, user: object) -> bool:
            return True

    assert _decides_on_loop(CameraEventsSubscription) and _decides_on_loop(SecretSubscription)
    assert _decides_on_loop(Admins)
    assert not _decides_on_loop(TenantSubscription)  # its get_server_filters may read anything
    assert not _decides_on_loop(Custom) and not _decides_on_loop(ModelPerms) and not _decides_on_loop(OwnHook)
