"""POST /__authorize: what a gateway asks the service that owns an entity, with a signed assertion of the user."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from django.contrib.auth.models import AnonymousUser
from django.core import signing
from django.test import Client, override_settings

from supergraph_messaging.realtime.auth import (
    ASSERTION_MAX_AGE,
    ASSERTION_SALT,
    AssertedUser,
    asserted_user,
    read_assertion,
    sign_assertion,
)

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("service_token")]
TOKEN = "g" * 40
AS_SERVICE = {"HTTP_AUTHORIZATION": f"Service {TOKEN}"}


@pytest.fixture
def service_token() -> Any:
    with override_settings(SUPERGRAPH_MESSAGING={"SERVICE_TOKEN": TOKEN}):
        yield


def ask(entity: Any, user: Any = None, filters: Any = None, assertion: Any = None, **headers: Any) -> Any:
    """What a gateway asks: the entity, the filters and a signed assertion of ``user`` (anonymous: None)."""
    if assertion is None:
        assertion = sign_assertion(user or AnonymousUser(), "tests", TOKEN)
    response = Client().post("/__authorize", json.dumps({"entity": entity, "filters": filters,
                                                         "assertion": assertion}),
                             content_type="application/json", **(headers or AS_SERVICE))
    return response.status_code, response.json()


def alice() -> Any:
    from django.contrib.auth.models import User

    return User.objects.create_user("alice", password="pw")


def test_only_services_may_ask() -> None:
    assert ask("Secret", HTTP_AUTHORIZATION="")[0] == 403
    assert ask("Secret", HTTP_AUTHORIZATION=f"Service {'h' * 40}")[0] == 403
    user = alice()
    # A browser's own session is not a service: the endpoint must not answer to a cookie.
    client = Client()
    client.force_login(user)
    assert client.post("/__authorize", "{}", content_type="application/json").status_code == 403
    with override_settings(SUPERGRAPH_MESSAGING={}):  # no SERVICE_TOKEN: nobody
        assert ask("Secret", HTTP_AUTHORIZATION="Service ")[0] == 403


def test_malformed_requests_get_a_clear_400() -> None:
    for body in ("not json", "[]", '{"entity": 5}'):
        response = Client().post("/__authorize", body, content_type="application/json", **AS_SERVICE)
        assert response.status_code == 400 and "entity" in response.json()["detail"]
    assert Client().get("/__authorize", **AS_SERVICE).status_code == 405


def test_the_services_permissions_decide_on_the_asserted_user() -> None:
    user = alice()
    assert ask("Nope") == (200, {"allowed": False, "code": "unknown_entity", "message": "Unknown entity 'Nope'."})
    _, answer = ask("Secret")
    assert answer["allowed"] is False and answer["code"] == "forbidden"
    assert ask("Secret", user)[1] == {"allowed": True, "server_filters": {}}
    user.is_active = False
    user.save()
    assert ask("Secret", user)[1]["allowed"] is False  # this service's own record says inactive


def test_a_user_this_service_does_not_store_is_the_asserted_one() -> None:
    from django.contrib.auth.models import User

    stranger = User(pk=4242, username="stranger", is_staff=True)  # the gateway's, never saved here
    claims = read_assertion(sign_assertion(stranger, "tests", TOKEN), TOKEN)
    user = asserted_user(claims)
    assert isinstance(user, AssertedUser) and user.is_authenticated and user.is_staff and user.pk == "4242"
    assert ask("Secret", stranger)[1]["allowed"] is True  # IsAuthenticated


def test_a_forged_expired_or_foreign_assertion_is_refused() -> None:
    user = alice()

    class Minute(signing.TimestampSigner):
        def timestamp(self) -> str:
            return signing.b62_encode(int(time.time()) - ASSERTION_MAX_AGE - 5)

    expired = Minute(key=TOKEN, salt=ASSERTION_SALT).sign_object({"aud": "tests", "id": str(user.pk),
                                                                   "username": "alice"})
    foreign = sign_assertion(user, "tests", "another-services-token-" + "x" * 20)  # a rogue's own key
    valid = sign_assertion(user, "tests", TOKEN)
    signature = valid.rpartition(":")[2]
    tampered = sign_assertion(AnonymousUser(), "tests", TOKEN).rpartition(":")[0] + ":" + signature
    for assertion, why in ((expired, "expired"), (foreign, "not signed"), (tampered, "not signed"),
                           ("", "no assertion"), ({"id": 1}, "no assertion")):
        status, answer = ask("Secret", assertion=assertion)
        assert status == 403 and why in answer["detail"], (why, answer)
    assert ask("Secret", assertion=valid)[1]["allowed"] is True


def test_server_filters_and_client_filters() -> None:
    assert ask("TenantEvents", filters={"kind": "x"})[1] == {"allowed": True, "server_filters": {"tenant_id": 1}}
    answer = ask("TenantEvents", filters={"secret_field": 1})[1]
    assert answer["allowed"] is False and answer["code"] == "invalid_filter" and "secret_field" in answer["message"]
