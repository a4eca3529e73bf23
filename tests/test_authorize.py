"""POST /__authorize: what a gateway asks the service that owns an entity, with its client's credentials."""

from __future__ import annotations

import json
from typing import Any

import pytest
from django.test import Client, override_settings

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("service_token")]
TOKEN = "g" * 40
AS_SERVICE = {"HTTP_AUTHORIZATION": f"Service {TOKEN}"}


@pytest.fixture
def service_token() -> Any:
    with override_settings(SUPERGRAPH_MESSAGING={"SERVICE_TOKEN": TOKEN}):
        yield


def ask(entity: Any, credentials: dict[str, Any] | None = None, filters: Any = None, **headers: Any) -> Any:
    response = Client().post("/__authorize", json.dumps({"entity": entity, "filters": filters,
                                                         "credentials": credentials or {}}),
                             content_type="application/json", **(headers or AS_SERVICE))
    return response.status_code, response.json()


def user_credentials() -> tuple[str, str]:
    from django.contrib.auth.models import User
    from rest_framework.authtoken.models import Token

    user = User.objects.create_user("alice", password="pw")
    client = Client()
    client.force_login(user)
    return client.cookies["sessionid"].value, Token.objects.create(user=user).key


def test_only_services_may_ask() -> None:
    assert ask("Secret", HTTP_AUTHORIZATION="")[0] == 403
    assert ask("Secret", HTTP_AUTHORIZATION=f"Service {'h' * 40}")[0] == 403
    session, _ = user_credentials()
    # A browser's own session is not a service: the endpoint must not answer to a cookie.
    client = Client()
    client.cookies["sessionid"] = session
    assert client.post("/__authorize", "{}", content_type="application/json").status_code == 403
    with override_settings(SUPERGRAPH_MESSAGING={}):  # no SERVICE_TOKEN: nobody
        assert ask("Secret", HTTP_AUTHORIZATION="Service ")[0] == 403


def test_malformed_requests_get_a_clear_400() -> None:
    for body in ("not json", "[]", '{"entity": 5}'):
        response = Client().post("/__authorize", body, content_type="application/json", **AS_SERVICE)
        assert response.status_code == 400 and "entity" in response.json()["detail"]
    assert Client().get("/__authorize", **AS_SERVICE).status_code == 405


def test_the_services_permissions_decide() -> None:
    session, token = user_credentials()
    assert ask("Nope") == (200, {"allowed": False, "code": "unknown_entity", "message": "Unknown entity 'Nope'."})
    _, answer = ask("Secret")
    assert answer["allowed"] is False and answer["code"] == "forbidden"
    assert ask("Secret", {"cookie": f"other=1; sessionid={session}"})[1] == {"allowed": True, "server_filters": {}}
    assert ask("Secret", {"token": token})[1]["allowed"] is True
    assert ask("Secret", {"authorization": f"Token {token}"})[1]["allowed"] is True
    # A wrong token is refused even next to a valid session, as /subscribe refuses it.
    assert ask("Secret", {"token": "wrong", "cookie": f"sessionid={session}"})[1]["allowed"] is False
    assert ask("Secret", {"cookie": "sessionid=forged"})[1]["allowed"] is False


def test_server_filters_and_client_filters() -> None:
    assert ask("TenantEvents", filters={"kind": "x"})[1] == {"allowed": True, "server_filters": {"tenant_id": 1}}
    answer = ask("TenantEvents", filters={"secret_field": 1})[1]
    assert answer["allowed"] is False and answer["code"] == "invalid_filter" and "secret_field" in answer["message"]
