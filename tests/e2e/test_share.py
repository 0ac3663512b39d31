"""A share link in a browser: made from the transcript, opened read-only by a logged-out
browser under the shared page's own CSP, then revoked and gone."""

from __future__ import annotations

import pytest

from tests.e2e.test_browser import USERNAME
from tests.e2e.test_parameters import sign_in

SEED = f"""
from django.contrib.auth import get_user_model
from playground.chat.models import Conversation, Message
user = get_user_model().objects.get(username={USERNAME!r})
c = Conversation.objects.create(owner=user, title="Shared trip", model="empiriolabs:gemma-4-e4b")
ask = Message.objects.create(conversation=c, role="user", text="Where to?", created_by=user)
Message.objects.create(
    conversation=c, role="assistant", parent=ask, text="**Oslo** <img src=x onerror=alert(1)>"
)
print(c.pk)
"""


@pytest.mark.e2e
def test_a_logged_out_browser_reads_a_shared_link_until_it_is_revoked(page, browser, live_server):
    sign_in(page, live_server.url)
    pk = int(live_server.manage("shell", "-c", SEED).strip().splitlines()[-1])
    page.goto(f"/c/{pk}/")
    page.locator("a.share-reply").first.click()
    page.wait_for_url(lambda url: "/share/" in url)
    page.get_by_label("Expires").select_option("7d")
    page.get_by_role("button", name="Make link").click()
    link = page.locator("input.share-url").input_value()
    assert "/review/s/" in link

    stranger = browser.new_context(base_url=live_server.url)
    try:
        visitor = stranger.new_page()
        problems: list[str] = []
        visitor.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
        visitor.on("dialog", lambda d: problems.append(f"dialog {d.message}"))
        response = visitor.goto(link)
        assert response is not None and response.status == 200
        assert response.headers["x-robots-tag"] == "noindex, nofollow"
        assert visitor.locator("strong", has_text="Oslo").is_visible()
        assert visitor.locator("form, input, textarea, button, script").count() == 0
        body = visitor.locator("body").inner_text()
        assert USERNAME not in body and "Where to?" in body
        assert problems == []

        page.goto("/review/shared/")
        row = page.locator("tr.share-link", has_text="Shared trip")
        assert row.locator(".share-state").inner_text() == "live"
        row.get_by_role("button", name="Revoke").click()
        page.wait_for_url(lambda url: url.endswith("/review/shared/"))
        assert row.locator(".share-state").inner_text() == "revoked"

        response = visitor.goto(link)
        assert response is not None and response.status == 404
        assert "Oslo" not in visitor.locator("body").inner_text()
    finally:
        stranger.close()
