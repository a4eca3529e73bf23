"""A custom WS_TOKEN_AUTHENTICATOR: a sync function that queries the database."""

from __future__ import annotations

from typing import Any

from django.contrib.auth.models import User


def user_named_by_token(token: str) -> Any:
    return User.objects.filter(username=token).first()
