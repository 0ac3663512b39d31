from __future__ import annotations

from collections.abc import Callable

from django.contrib.auth import get_user_model
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect
from django.urls import reverse

# Once somebody has an account it stays that way; skip the query from then on.
_has_users = False

CSP = "; ".join(
    [
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data: blob:",
        "connect-src 'self'",
        "object-src 'none'",
        "base-uri 'none'",
        "frame-ancestors 'none'",
        "form-action 'self'",
    ]
)


def has_users() -> bool:
    global _has_users
    if not _has_users:
        _has_users = get_user_model().objects.exists()
    return _has_users


def first_run_middleware(get_response: Callable) -> Callable:
    """Until the first admin exists, every page leads to the set-up form."""

    def middleware(request: HttpRequest) -> HttpResponse:
        setup = reverse("setup")
        if not request.path.startswith(("/static/", setup)) and not has_users():
            return redirect(setup)
        return get_response(request)

    return middleware


def content_security_policy_middleware(get_response: Callable) -> Callable:
    """No inline script or style, no other origin: model output cannot run, even if a
    sanitizer bug let markup through."""

    def middleware(request: HttpRequest) -> HttpResponse:
        response = get_response(request)
        response.headers.setdefault("Content-Security-Policy", CSP)
        return response

    return middleware
