"""First run, login, and sign-up."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model

pytestmark = pytest.mark.django_db

User = get_user_model()


def test_the_first_visitor_is_sent_to_set_up(client):
    response = client.get("/")
    assert response.status_code == 302 and response["Location"] == "/setup/"
    assert client.get("/login/")["Location"] == "/setup/"


def test_set_up_creates_an_admin_and_logs_in(client):
    response = client.post(
        "/setup/",
        {"username": "root", "password1": "a long pass phrase", "password2": "a long pass phrase"},
    )
    assert response.status_code == 302 and response["Location"] == "/keys/"
    admin = User.objects.get()
    assert admin.is_superuser and admin.is_staff
    assert client.get("/keys/").status_code == 200


def test_set_up_shows_errors_and_creates_nothing_on_bad_input(client):
    response = client.post(
        "/setup/", {"username": "root", "password1": "a long pass phrase", "password2": "other"}
    )
    assert response.status_code == 200 and b"didn" in response.content
    assert not User.objects.exists()


def test_set_up_is_closed_once_someone_exists(client, user):
    response = client.post(
        "/setup/",
        {
            "username": "mallory",
            "password1": "a long pass phrase",
            "password2": "a long pass phrase",
        },
    )
    assert response.status_code == 302
    assert not User.objects.filter(username="mallory").exists()


def test_login_is_required_everywhere_but_the_login_page(client, user, conversation):
    for path in ["/", "/keys/", f"/c/{conversation.pk}/", "/c/new/"]:
        response = client.get(path)
        assert response.status_code in (302, 405)
        if response.status_code == 302:
            assert response["Location"].startswith("/login/")
    assert client.get("/login/").status_code == 200


def test_a_user_logs_in(client, user):
    response = client.post("/login/", {"username": "ada", "password": "correct horse battery"})
    assert response.status_code == 302
    assert client.get("/keys/").status_code == 200


def test_sign_up_is_off_by_default(client, user):
    assert client.get("/signup/").status_code == 404
    response = client.post(
        "/signup/",
        {"username": "sam", "password1": "a long pass phrase", "password2": "a long pass phrase"},
    )
    assert response.status_code == 404
    assert not User.objects.filter(username="sam").exists()


def test_sign_up_works_when_the_setting_allows_it(client, user, settings):
    settings.PLAYGROUND_ALLOW_SIGNUP = True
    response = client.post(
        "/signup/",
        {"username": "sam", "password1": "a long pass phrase", "password2": "a long pass phrase"},
    )
    assert response.status_code == 302
    sam = User.objects.get(username="sam")
    assert not sam.is_staff
