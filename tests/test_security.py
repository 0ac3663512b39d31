"""Site-wide headers, whatever app serves the page."""

from __future__ import annotations

import pytest
from django.http import HttpResponse
from django.test import RequestFactory

from playground.security import CSP, content_security_policy_middleware

pytestmark = pytest.mark.django_db


def test_pages_carry_a_strict_content_security_policy(client, user):
    client.force_login(user)
    csp = client.get("/keys/")["Content-Security-Policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp


def test_the_login_page_carries_it_too(client, user):
    response = client.get("/login/")
    assert response.status_code == 200
    assert response["Content-Security-Policy"] == CSP


def test_a_view_with_a_stricter_policy_of_its_own_keeps_it():
    def view(request):
        response = HttpResponse("image")
        response["Content-Security-Policy"] = "default-src 'none'; sandbox"
        return response

    response = content_security_policy_middleware(view)(RequestFactory().get("/"))
    assert response["Content-Security-Policy"] == "default-src 'none'; sandbox"
