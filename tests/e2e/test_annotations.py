"""Reviewing in a browser, by keyboard: a reviewer rates a team reply, labels it and comments
with an @mention; the mentioned teammate sees the header badge, opens the inbox and follows
the mention to the reply, which marks it read."""

from __future__ import annotations

import pytest

from tests.e2e.test_browser import Sockets
from tests.e2e.test_parameters import sign_in

PASSWORD = "correct horse battery review"
SEED = f"""
from django.contrib.auth import get_user_model
from playground.accounts.models import Membership, Team
from playground.chat.models import Conversation, Message
from playground.review.models import Label
User = get_user_model()
rita = User.objects.create_user("rita", password={PASSWORD!r})
sam = User.objects.create_user("sam", password={PASSWORD!r})
team = Team.create(name="Review crew", owner=rita)
team.add_member(sam, Membership.Role.MEMBER)
Label.objects.create(team=team, owner=rita, name="Hallucination", colour="#dc2626")
c = Conversation.objects.create(
    owner=rita, team=team, title="Capital", model="empiriolabs:gemma-4-e4b"
)
ask = Message.objects.create(
    conversation=c, role="user", text="Capital of Norway?", created_by=rita
)
reply = Message.objects.create(conversation=c, role="assistant", parent=ask, text="Bergen.")
print(c.pk, reply.pk)
"""


def log_in(page, username: str) -> None:
    page.goto("/login/")
    page.fill("#id_username", username)
    page.fill("#id_password", PASSWORD)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url(lambda url: "/login/" not in url)


@pytest.mark.e2e
def settled(page, reply) -> None:
    """The bar htmx swapped in is live: its settle step, which wires its controls, is over.
    A key pressed on a control of the new bar before that does nothing (seen: within the
    swap's 20 ms settle delay, Enter on "Score 2" sent no request)."""
    page.locator(f"#review-{reply}:not(.htmx-added):not(.htmx-settling)").wait_for()


def test_a_reviewer_annotates_and_mentions_and_the_teammate_sees_the_badge(
    browser, page, live_server
):
    sign_in(page, live_server.url)  # the first-run admin, which other tests expect
    pk, reply = live_server.manage("shell", "-c", SEED).strip().splitlines()[-1].split()
    rita = page
    rita.context.clear_cookies()
    log_in(rita, "rita")
    sockets = Sockets(rita)
    with sockets.transcript_loaded():
        rita.goto(f"/c/{pk}/")
    bar = rita.locator(f"#review-{reply}")
    bar.locator(".rate").wait_for()
    rita.wait_for_load_state("networkidle")

    # Everything by keyboard: focus, then Enter or Space, as a keyboard user would. The
    # socket opened on the transcript the page drew, so nothing redraws the bars under the
    # keys (tests/test_transcript_digest.py).
    bar.get_by_role("button", name="Thumbs down").focus()
    rita.keyboard.press("Enter")
    rita.locator(f"#review-{reply} .rate-thumb.down[aria-pressed=true]").wait_for()
    settled(rita, reply)
    rita.locator(f"#review-{reply}").get_by_role("button", name="Score 2").focus()
    rita.keyboard.press("Enter")
    rita.locator(f"#review-{reply} .score-2[aria-pressed=true]").wait_for()
    settled(rita, reply)
    rita.locator(f"#review-{reply} .label-pick summary").focus()
    rita.keyboard.press("Enter")
    rita.locator(f"#review-{reply}").get_by_label("Hallucination").focus()
    rita.keyboard.press("Space")
    rita.locator(f"#review-{reply} .rate .review-label", has_text="Hallucination").wait_for()
    settled(rita, reply)
    rita.locator(f"#review-{reply} .comments summary").focus()
    rita.keyboard.press("Enter")
    rita.locator(f"#review-{reply} .comment-form button").click()  # empty: refused, shown
    rita.locator(f"#review-{reply} .error", has_text="Write a comment first.").wait_for()
    settled(rita, reply)
    rita.locator(f"#comment-text-{reply}").fill("@sam Bergen is wrong <b>really</b>")
    rita.locator(f"#review-{reply} .comment-form button").focus()
    rita.keyboard.press("Enter")
    comment = rita.locator(f"#review-{reply} .comment").first
    comment.wait_for()
    assert comment.locator(".mention").inner_text() == "@sam"
    assert "<b>really</b>" in comment.inner_text()  # shown as typed, not as markup
    rita.get_by_label("Review status").select_option("flagged")
    rita.locator("#review-status .review-set", has_text="set by rita").wait_for()

    sam_context = browser.new_context(base_url=live_server.url)
    sam_context.set_default_timeout(10_000)
    sam = sam_context.new_page()
    try:
        log_in(sam, "sam")
        sam.goto("/review/?review=flagged&rating=down")
        assert sam.locator(".history-row", has_text="Capital").count() == 1
        assert sam.locator("#inbox-badge").inner_text() == "1"
        sam.locator("#inbox-link").click()
        item = sam.locator(".inbox-item.unread", has_text="Bergen is wrong")
        item.get_by_role("button", name="Open the reply").click()
        sam.wait_for_url(lambda url: f"/c/{pk}/" in url)
        sam.locator(f"#review-{reply} .comment", has_text="Bergen is wrong").wait_for()
        assert sam.locator("#inbox-badge").count() == 0
        # In bulk from History: tick every row shown, approve them.
        sam.goto("/review/?review=flagged")
        sam.get_by_label("all shown").check()
        assert sam.locator("input.history-select:checked").count() == 1
        sam.locator("#bulk-status").select_option("approved")
        sam.get_by_role("button", name="Set status").click()
        sam.locator(".flash li", has_text="1 conversation set to Approved").wait_for()
        assert sam.locator(".history-row", has_text="Capital").count() == 0  # not flagged now
    finally:
        sam_context.close()


@pytest.mark.e2e
def test_a_teammate_watching_sees_the_rating_comment_and_status_arrive(browser, page, live_server):
    sign_in(page, live_server.url)
    seed = SEED.replace('"rita"', '"rina"').replace('"sam"', '"sol"').replace("Review crew", "Pair")
    pk, reply = live_server.manage("shell", "-c", seed).strip().splitlines()[-1].split()
    page.context.clear_cookies()
    contexts = []
    pages = {}
    for name in ("rina", "sol"):
        context = browser.new_context(base_url=live_server.url)
        context.set_default_timeout(10_000)
        contexts.append(context)
        pages[name] = context.new_page()
        log_in(pages[name], name)
        sockets = Sockets(pages[name])
        with sockets.transcript_loaded():
            pages[name].goto(f"/c/{pk}/")
        pages[name].locator(f"#review-{reply} .rate").wait_for()
    rina, sol = pages["rina"], pages["sol"]
    try:
        # Sol reads the comments while Rina works: they stay open when the bar is redrawn.
        sol.locator(f"#review-{reply} .comments summary").click()
        rina.locator(f"#review-{reply}").get_by_role("button", name="Thumbs down").click()
        rina.locator(f"#review-{reply} .rate-thumb.down[aria-pressed=true]").wait_for()
        sol.locator(f"#review-{reply} .rate-thumb.down", has_text="1").wait_for()
        # Sol's own thumbs are not pressed: the bar was drawn for Sol, not copied from Rina's.
        assert (
            sol.locator(f"#review-{reply} .rate-thumb.down").get_attribute("aria-pressed")
            == "false"
        )
        rina.locator(f"#review-{reply} .comments summary").click()
        rina.locator(f"#comment-text-{reply}").fill("Bergen is not the capital")
        rina.locator(f"#review-{reply} .comment-form button").click()
        sol.locator(f"#review-{reply} .comment", has_text="Bergen is not the capital").wait_for()
        assert sol.locator(f"#review-{reply} details.comments").get_attribute("open") is not None
        rina.get_by_label("Review status").select_option("flagged")
        sol.locator("#review-status .review-set", has_text="set by rina").wait_for()
        # A comment Sol is writing is never lost to a redraw: that bar waits.
        sol.locator(f"#comment-text-{reply}").fill("I think it is Oslo")
        rina.locator(f"#review-{reply}").get_by_role("button", name="Score 4").click()
        rina.locator(f"#review-{reply} .mean-score", has_text="4").wait_for()
        sol.wait_for_timeout(1_000)
        assert sol.locator(f"#comment-text-{reply}").input_value() == "I think it is Oslo"
        assert sol.locator(f"#review-{reply} .mean-score").count() == 0
    finally:
        for context in contexts:
            context.close()
