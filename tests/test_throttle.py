"""Failed sign-ins are limited per username and per client address, and so are first-run and
sign-up submissions: past the limit the form says how long to wait, and the right password
does not get through either."""

from __future__ import annotations

import time

import pytest
from django.contrib.auth import get_user_model
from django.test import Client

pytestmark = pytest.mark.django_db

User = get_user_model()
RIGHT = "correct horse battery"


@pytest.fixture(autouse=True)
def limits(settings):
    settings.PLAYGROUND_THROTTLE = {"PER_USERNAME": 5, "PER_ADDRESS": 20, "LOCKOUT": 900}
    # Every attempt hashes a password; the real hasher takes about a second here.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


def attempt(client: Client, username: str, password: str, address: str = "10.0.0.1"):
    return client.post("/login/", {"username": username, "password": password}, REMOTE_ADDR=address)


def test_five_wrong_passwords_lock_the_username_even_for_the_right_one(client, user):
    for _ in range(4):
        assert attempt(client, "ada", "wrong").status_code == 200
    locked = attempt(client, "ada", "wrong")  # the fifth locks it, and says so at once
    assert locked.status_code == 429
    assert "Too many failed attempts. Try again in 15 minutes." in locked.content.decode()
    response = attempt(client, "ada", RIGHT)
    assert response.status_code == 429
    assert "Try again in 15 minutes" in response.content.decode()
    assert "_auth_user_id" not in client.session
    # The lock is per name: someone else signs in from the same address.
    User.objects.create_user("bob", password=RIGHT)
    assert attempt(client, "bob", RIGHT).status_code == 302


def test_the_username_lock_ignores_case_and_holds_from_another_address(client, user):
    for _ in range(5):
        attempt(client, "ADA", "wrong", address="10.0.0.1")
    assert attempt(Client(), "ada", RIGHT, address="10.9.9.9").status_code == 429


def test_one_address_trying_many_names_is_locked_out(client, user):
    for i in range(20):
        attempt(client, f"guess{i}", "wrong")
    response = attempt(client, "ada", RIGHT)
    assert response.status_code == 429
    assert attempt(Client(), "ada", RIGHT, address="10.0.0.2").status_code == 302


def test_a_right_password_clears_the_names_count(client, user):
    for _ in range(4):
        attempt(client, "ada", "wrong")
    assert attempt(client, "ada", RIGHT).status_code == 302
    client.logout()
    for _ in range(4):
        assert attempt(client, "ada", "wrong").status_code == 200


def test_the_lock_ends_after_the_lockout(client, user, settings):
    settings.PLAYGROUND_THROTTLE = {"PER_USERNAME": 2, "PER_ADDRESS": 20, "LOCKOUT": 1}
    attempt(client, "ada", "wrong")
    response = attempt(client, "ada", "wrong")
    assert "Try again in 1 seconds" in response.content.decode()
    time.sleep(1.1)
    assert attempt(client, "ada", RIGHT).status_code == 302


def test_the_admin_login_is_limited_too(client, user):
    user.is_staff = True
    user.save()
    for _ in range(5):
        attempt(client, "ada", "wrong")
    response = client.post(
        "/admin/login/", {"username": "ada", "password": RIGHT}, REMOTE_ADDR="10.0.0.1"
    )
    assert response.status_code == 200  # the form again: not signed in
    assert "_auth_user_id" not in client.session


def test_the_first_run_form_is_limited_per_address(client):
    bad = {"username": "root", "password1": "a long pass phrase", "password2": "different"}
    for _ in range(20):
        assert client.post("/setup/", bad, REMOTE_ADDR="10.0.0.1").status_code == 200
    good = {
        "username": "root",
        "password1": "a long pass phrase",
        "password2": "a long pass phrase",
    }
    response = client.post("/setup/", good, REMOTE_ADDR="10.0.0.1")
    assert response.status_code == 429
    assert "Too many failed attempts. Try again in 15 minutes." in response.content.decode()
    assert not User.objects.exists()
    assert client.post("/setup/", good, REMOTE_ADDR="10.0.0.3").status_code == 302


def test_the_sign_up_form_is_limited_per_address(client, settings):
    settings.PLAYGROUND_ALLOW_SIGNUP = True
    bad = {"username": "sam", "password1": "a long pass phrase", "password2": "different"}
    User.objects.create_user("admin", password=RIGHT)
    for _ in range(20):
        client.post("/signup/", bad, REMOTE_ADDR="10.0.0.1")
    good = {"username": "sam", "password1": "a long pass phrase", "password2": "a long pass phrase"}
    response = client.post("/signup/", good, REMOTE_ADDR="10.0.0.1")
    assert response.status_code == 429
    assert "Try again in 15 minutes" in response.content.decode()
    assert not User.objects.filter(username="sam").exists()


def test_an_unreachable_cache_lets_people_sign_in_rather_than_locking_everyone_out(
    client, user, monkeypatch
):
    from django.core.cache import cache

    def unreachable(*args, **kwargs):
        raise ConnectionError("Redis is away")

    for name in ("get_many", "add", "incr", "set", "delete"):
        monkeypatch.setattr(cache, name, unreachable)
    assert attempt(client, "ada", "wrong").status_code == 200
    assert attempt(client, "ada", RIGHT).status_code == 302
