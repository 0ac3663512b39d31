"""A review queue in a browser: made from a History filter, then stepped through by keyboard
alone (4 scores, u thumbs up, a approves, j moves on) while the progress bar advances; keys
typed into the comment box stay there."""

from __future__ import annotations

import re

import pytest

from tests.e2e.test_parameters import sign_in

PASSWORD = "correct horse battery queue"
SEED = f"""
from django.contrib.auth import get_user_model
from playground.chat.models import Conversation, Message
from playground.review.models import Label, ReviewStatus
quinn = get_user_model().objects.create_user("quinn", password={PASSWORD!r})
Label.objects.create(owner=quinn, name="Too vague", colour="#d97706")
for title, answer, status in [
    ("Fjord depth", "About 1300 metres.", "flagged"),
    ("Glacier speed", "A metre a day.", "flagged"),
    ("Aurora colour", "Green, mostly.", "approved"),
]:
    c = Conversation.objects.create(owner=quinn, title=title, model="empiriolabs:gemma-4-e4b")
    ask = Message.objects.create(conversation=c, role="user", text=title + "?", created_by=quinn)
    Message.objects.create(conversation=c, role="assistant", parent=ask, text=answer)
    ReviewStatus.set(c, status, quinn)
"""


def log_in(page, username: str) -> None:
    page.goto("/login/")
    page.fill("#id_username", username)
    page.fill("#id_password", PASSWORD)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url(lambda url: "/login/" not in url)


@pytest.mark.e2e
def test_a_reviewer_steps_through_a_queue_by_keyboard(page, live_server):
    sign_in(page, live_server.url)  # the first-run admin, which other tests expect
    live_server.manage("shell", "-c", SEED)
    page.context.clear_cookies()
    log_in(page, "quinn")

    # The queue, from History's "flagged" filter in the personal space.
    page.goto("/review/?space=personal&review=flagged")
    # Listened to from here: the conversation page the log-in landed on is not this test's.
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.get_by_role("link", name="Make a review queue from these filters").click()
    assert "2 replies match now" in page.locator("#queue-matched").inner_text()
    page.get_by_label("Name").fill("Flagged this week")
    assert page.get_by_label("quinn").is_checked()  # the only possible reviewer
    page.get_by_role("button", name="Make queue").click()
    page.get_by_role("link", name="Review my items").click()
    page.wait_for_url(re.compile(r"/review/queues/\d+/review/1/$"))

    item = page.locator("#queue-item")
    progress = page.locator("#queue-progress-text")
    assert progress.inner_text() == "0 / 2 done"
    assert page.locator(".queue-legend").is_visible()
    first_text = item.locator(".message.assistant").inner_text()

    page.keyboard.press("4")
    item.locator('button[aria-label="Score 4"][aria-pressed="true"]').wait_for()
    page.keyboard.press("u")
    item.locator('button[aria-label="Thumbs up"][aria-pressed="true"]').wait_for()
    page.keyboard.press("a")
    page.locator("#queue-progress-text", has_text="1 / 2 done").wait_for()
    assert page.locator("#queue-progress").get_attribute("value") == "1"
    assert "Approved" in page.locator("#queue-status").inner_text()

    page.keyboard.press("j")
    page.wait_for_url(re.compile(r"/review/2/$"))
    page.locator('#queue-item[data-position="2"]').wait_for()
    assert item.locator(".message.assistant").inner_text() != first_text
    assert progress.inner_text() == "1 / 2 done"
    scored = item.locator('button[aria-label^="Score"][aria-pressed="true"]')
    assert scored.count() == 0  # nothing scored here yet
    assert item.locator('button[data-key="f"][aria-pressed="true"]').count() == 1  # flagged

    # Typing in the comment box: the keys are text there, not commands.
    page.keyboard.press("c")
    assert page.evaluate("document.activeElement.id") == "queue-comment"
    page.keyboard.type("k4a")
    assert page.locator("#queue-comment").input_value() == "k4a"
    assert page.url.endswith("/review/2/")
    assert scored.count() == 0 and progress.inner_text() == "1 / 2 done"
    page.keyboard.press("Escape")

    # l opens the label picker on its first label; Space ticks it, Tab and Enter save, and
    # the picker closes so the keys carry on.
    page.keyboard.press("l")
    assert page.evaluate("document.activeElement.name") == "label"
    page.keyboard.press("Space")
    page.keyboard.press("Tab")
    page.keyboard.press("Enter")
    item.locator("summary .review-label", has_text="Too vague").wait_for()
    assert not page.locator("#queue-labels").evaluate("el => el.open")  # closed again

    page.keyboard.press("k")
    page.wait_for_url(re.compile(r"/review/1/$"))
    page.locator('#queue-item[data-position="1"]').wait_for()
    assert item.locator('button[aria-label="Score 4"]').get_attribute("aria-pressed") == "true"

    page.get_by_role("link", name="← Flagged this week").click()
    row = page.locator('tr[data-reviewer="quinn"]')
    assert row.locator(".queue-done").inner_text() == "1 / 2"
    assert row.locator('td[data-score="4"]').inner_text().strip() == "1"
    assert errors == []
