from __future__ import annotations

from collections.abc import Callable

from django.contrib.auth import get_user_model
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect
from django.urls import reverse

GetResponse = Callable[[HttpRequest], HttpResponse]

# Once somebody has an account it stays that way; skip the query from then on.
_has_users = False


def has_users() -> bool:
    global _has_users
    if not _has_users:
        _has_users = get_user_model().objects.exists()
    return _has_users


def first_run_middleware(get_response: GetResponse) -> GetResponse:
    """Until the first admin exists, every page leads to the set-up form."""

    def middleware(request: HttpRequest) -> HttpResponse:
        setup = reverse("setup")
        if not request.path.startswith(("/static/", setup)) and not has_users():
            return redirect(setup)
        return get_response(request)

    return middleware
