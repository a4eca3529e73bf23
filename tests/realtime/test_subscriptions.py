from __future__ import annotations

import pytest

from supergraph_messaging.realtime.hub import ChannelRoutes, Route
from supergraph_messaging.realtime.subscriptions import Condition, FilterError, Subscription


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
    assert "must be int, float, str or bool" in _declare(filters={"a": ["eq"]}, field_types={"a": list}).check()[0]
