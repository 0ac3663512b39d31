"""History in a browser: search updates the results in place and the URL with them, a hit
opens its reply, and "Show more" appends the next page, all under the page's strict CSP."""

from __future__ import annotations

import pytest

from tests.e2e.test_browser import USERNAME
from tests.e2e.test_parameters import sign_in

SEED = f"""
from django.contrib.auth import get_user_model
from playground.chat.models import Conversation, Message
user = get_user_model().objects.get(username={USERNAME!r})
for i in range(30):
    c = Conversation.objects.create(
        owner=user, title=f"marsupial {{i}}", model="empiriolabs:gemma-4-e4b"
    )
    Message.objects.create(conversation=c, role="user", text="Tell me about them.")
    Message.objects.create(
        conversation=c, role="assistant", text=f"The <quokka> number {{i}} smiles."
    )
"""


@pytest.mark.e2e
def test_search_filters_in_place_opens_a_hit_and_pages_on(page, live_server):
    sign_in(page, live_server.url)
    live_server.manage("shell", "-c", SEED)
    page.goto("/review/")
    page.get_by_label("Search").first.fill("quokka")
    page.get_by_role("button", name="Search").click()
    page.wait_for_url(lambda url: "q=quokka" in url)
    rows = page.locator("#history-list li.history-row")
    rows.nth(24).wait_for(state="attached")
    assert rows.count() == 25
    first = rows.first
    assert first.locator(".history-title").inner_text() == "marsupial 29"
    assert first.locator("mark").first.inner_text() == "quokka"
    assert "<quokka>" in first.locator(".snippets").inner_text()  # escaped, shown as text
    page.get_by_role("button", name="Show more").click()
    rows.nth(29).wait_for(state="attached")
    titles = rows.locator(".history-title").all_inner_texts()
    assert titles == [f"marsupial {i}" for i in range(29, -1, -1)]
    # A bookmark of the URL shows the same results.
    page.goto(page.url)
    assert page.locator("#history-list li.history-row").count() == 25
    # Opening a hit lands on its reply.
    page.locator("#history-list li.history-row .snippets a").first.click()
    page.wait_for_url(lambda url: "/c/" in url and "#msg-" in url)
