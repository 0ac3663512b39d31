"""The one authentication backend: Django's, behind the failed-login limits.

In the backend rather than the login view, so every way to check a password (the login page,
the admin's login page, anything calling authenticate()) counts failures and is refused
while the username or address is locked out. The login page says how long the wait is.
"""

from __future__ import annotations

from typing import Any

from django.contrib.auth.backends import ModelBackend
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest

from playground.accounts import throttle

PATH = "playground.accounts.backends.ThrottledModelBackend"


class ThrottledModelBackend(ModelBackend):
    def authenticate(
        self,
        request: HttpRequest | None,
        username: str | None = None,
        password: str | None = None,
        **kwargs: Any,
    ) -> Any:
        if request is None or username is None:  # not a sign-in by a person (e.g. a script)
            return super().authenticate(request, username, password, **kwargs)
        if throttle.locked_for(throttle.LOGIN, request, username):
            raise PermissionDenied  # authenticate() then tries no other backend
        user = super().authenticate(request, username, password, **kwargs)
        if user is None:
            throttle.failed(throttle.LOGIN, request, username)
        else:
            throttle.succeeded(throttle.LOGIN, request, username)
        return user
