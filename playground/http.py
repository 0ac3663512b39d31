"""Request types for views, so a type checker knows what middleware and decorators add.

django-htmx leaves `HtmxHttpRequest` to the project, as its documentation shows."""

from __future__ import annotations

from django.contrib.auth.models import User
from django.http import HttpRequest
from django_htmx.middleware import HtmxDetails


class AuthenticatedHttpRequest(HttpRequest):
    """The request of a `login_required` view: its user is an account, never anonymous."""

    user: User


class HtmxHttpRequest(AuthenticatedHttpRequest):
    """A logged-in view that reads `request.htmx` (set by django-htmx's middleware)."""

    htmx: HtmxDetails
