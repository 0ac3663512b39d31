"""Site-wide response headers, set for every page whatever app serves it."""

from __future__ import annotations

from collections.abc import Callable

from django.http import HttpRequest, HttpResponse

GetResponse = Callable[[HttpRequest], HttpResponse]

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


def content_security_policy_middleware(get_response: GetResponse) -> GetResponse:
    """No inline script or style, no other origin: model output cannot run, even if a
    sanitizer bug let markup through."""

    def middleware(request: HttpRequest) -> HttpResponse:
        response = get_response(request)
        # A view with a stricter policy of its own (an uploaded image) keeps it.
        response.headers.setdefault("Content-Security-Policy", CSP)
        return response

    return middleware
