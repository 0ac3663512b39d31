"""A parameter control in a real browser: the slider's value reaches the upstream request."""

from __future__ import annotations

import pytest

from tests.e2e.test_browser import API_KEY, PASSWORD, USERNAME, Sockets, chat_requests
from tests.upstream import Behaviour


def sign_in(page, origin: str) -> None:
    """Whichever test runs first creates the admin; the others log in as it."""
    page.goto("/")
    if page.url == f"{origin}/setup/":
        page.fill("#id_username", USERNAME)
        page.fill("#id_password1", PASSWORD)
        page.fill("#id_password2", PASSWORD)
        page.get_by_role("button", name="Create admin account").click()
        page.wait_for_url(f"{origin}/keys/")
    elif "/login/" in page.url:
        page.fill("#id_username", USERNAME)
        page.fill("#id_password", PASSWORD)
        page.get_by_role("button", name="Log in").click()
        page.wait_for_url(lambda url: "/login/" not in url)
    page.goto("/keys/")
    page.locator("#key-input-empiriolabs").fill(API_KEY)
    page.locator("#key-empiriolabs button.primary").click()
    page.wait_for_url(f"{origin}/keys/")


@pytest.mark.e2e
def test_a_moved_slider_is_sent_and_an_out_of_range_value_is_refused(page, live_server):
    upstream = live_server.upstream
    upstream.reset()
    upstream.default = Behaviour(tokens=["Cool."])
    sign_in(page, live_server.url)
    sockets = Sockets(page)
    with sockets.transcript_loaded():
        page.goto("/")

    # Move the temperature slider with the keyboard: the number box follows.
    slider = page.locator('input[type=range][data-number="p-temperature"]')
    slider.focus()
    for _ in range(20):
        slider.press("ArrowLeft")
    assert page.input_value("#p-temperature") == "0.5"
    slider.dispatch_event("change")
    page.wait_for_function("() => document.getElementById('settings-status').textContent")

    page.fill("#prompt", "Be cool.")
    page.press("#prompt", "Enter")
    page.locator(".message.assistant.complete").wait_for()
    body = chat_requests(upstream)[-1].body
    assert body["temperature"] == 0.5
    assert "top_p" not in body  # untouched: the provider's default applies

    # A value typed past the documented bound gets a plain message and is never sent.
    page.fill("#p-temperature", "2.5")
    page.fill("#prompt", "Be hot.")
    page.press("#prompt", "Enter")
    error = page.locator("#param-error-temperature")
    error.wait_for()
    page.wait_for_function(
        "() => document.getElementById('param-error-temperature').textContent.length > 0"
    )
    assert "temperature must be between 0 and 2 (got 2.5)" in error.inner_text()
    assert len(chat_requests(upstream)) == 1

    # "unset" leaves it out again.
    page.locator("#param-temperature .unset").click()
    assert page.input_value("#p-temperature") == ""
    page.fill("#prompt", "Be default.")
    page.press("#prompt", "Enter")
    page.locator(".message.assistant.complete").nth(1).wait_for()
    assert "temperature" not in chat_requests(upstream)[-1].body
