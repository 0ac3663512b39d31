"""The request type of views that read `request.htmx` (set by django-htmx's middleware).

django-htmx leaves this class to the project, as its documentation shows, so type checkers
know the attribute exists."""

from __future__ import annotations

from django.http import HttpRequest
from django_htmx.middleware import HtmxDetails


class HtmxHttpRequest(HttpRequest):
    htmx: HtmxDetails
