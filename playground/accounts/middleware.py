from __future__ import annotations

import functools
import re
from collections.abc import Callable
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from django.contrib.auth import get_user_model
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect
from django.urls import reverse
from django.utils import timezone

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


# An IANA name such as "Europe/Oslo" or "America/Argentina/Buenos_Aires": nothing that could
# name a file outside the time zone database.
_ZONE_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_+-]*(/[A-Za-z0-9_+-]+){0,2}")


@functools.lru_cache(maxsize=64)
def _zone(name: str) -> ZoneInfo | None:
    if len(name) > 64 or not _ZONE_NAME.fullmatch(name):
        return None
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return None


def time_zone_middleware(get_response: GetResponse) -> GetResponse:
    """Dates in the reader's time zone (the sidebar's Today, Yesterday and times of day), which
    only the browser knows: app.js keeps it in the `tz` cookie. Without one, or with a name
    that is not a time zone, TIME_ZONE applies."""

    def middleware(request: HttpRequest) -> HttpResponse:
        zone = _zone(request.COOKIES.get("tz", ""))
        if zone is None:
            timezone.deactivate()
        else:
            timezone.activate(zone)
        return get_response(request)

    return middleware
