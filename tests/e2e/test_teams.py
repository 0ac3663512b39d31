"""Two people share a team in two browsers: one creates the team, adds the other and streams
a reply in a team conversation; the other watches it appear on the Activity page, opens it,
and sees it keep streaming there, while the first sees who is watching."""

from __future__ import annotations

import re

import pytest

from tests.e2e.test_browser import Sockets
from tests.e2e.test_parameters import sign_in
from tests.upstream import Behaviour

PASSWORD = "correct horse battery teams"
TEAM_KEY = "sk-e2e-team-TEAMCANARY-7788"
SEED_USERS = f"""
from django.contrib.auth import get_user_model
User = get_user_model()
for name in ("lead", "mate", "guest"):
    if not User.objects.filter(username=name).exists():
        User.objects.create_user(name, password={PASSWORD!r})
"""


def log_in(page, username: str) -> None:
    page.goto("/login/")
    page.fill("#id_username", username)
    page.fill("#id_password", PASSWORD)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url(lambda url: "/login/" not in url)


@pytest.mark.e2e
def test_a_teammate_watches_a_team_reply_on_activity_and_in_the_conversation(
    browser, page, live_server
):
    sign_in(page, live_server.url)  # the first-run admin, which other tests expect
    live_server.manage("shell", "-c", SEED_USERS)
    upstream = live_server.upstream
    upstream.reset()
    upstream.default = Behaviour(n_tokens=60, interval=0.05)

    lead = page
    lead.context.clear_cookies()
    log_in(lead, "lead")
    lead.goto("/teams/")
    lead.fill("#team-name", "Skunkworks")
    lead.get_by_role("button", name="Create").click()
    lead.wait_for_url(re.compile(r"/teams/\d+/$"))
    team_url = lead.url
    lead.fill("#add-username", "mate")
    lead.get_by_role("button", name="Add").click()
    assert lead.locator("table.members tbody tr", has_text="mate").count() == 1
    lead.locator("#team-key-input-empiriolabs").fill(TEAM_KEY)
    lead.locator("#team-key-empiriolabs button.primary").click()
    assert "Team key ••••7788" in lead.locator("#team-key-empiriolabs").inner_text()

    # Creating the team made it the current space: a new conversation is a team one.
    lead_sockets = Sockets(lead)
    with lead_sockets.transcript_loaded():
        lead.get_by_role("link", name="Chat", exact=True).click()
        lead.wait_for_url(re.compile(r"/c/\d+/$"))
    head = lead.locator("#conversation-head").inner_text()
    assert "Team Skunkworks" in head and "team key ••••7788" in head
    conversation_url = lead.url

    mate_context = browser.new_context(base_url=live_server.url)
    mate_context.set_default_timeout(10_000)
    mate = mate_context.new_page()
    try:
        log_in(mate, "mate")
        mate.goto(team_url + "activity/")
        mate.wait_for_event("websocket")
        mate.locator("#activity-streaming:empty").wait_for(state="attached")

        lead.fill("#prompt", "Plan the launch")
        lead.keyboard.press("Enter")
        row = mate.locator("#activity-streaming li")
        row.wait_for()
        assert "lead" in row.inner_text() and "Plan the launch" in row.inner_text()
        mate.locator("#activity-streaming .progress", has_text="tokens so far").wait_for()

        mate_sockets = Sockets(mate)
        with mate_sockets.transcript_loaded():
            row.get_by_role("link").click()
            mate.wait_for_url(conversation_url)
        streaming = mate.locator(".message.assistant.streaming .body")
        streaming.wait_for()
        mate.locator(".message.assistant .status-complete").wait_for(timeout=20_000)
        assert "tok59" in mate.locator(".message.assistant .body").inner_text()
        # Each sees the other by initials while both have the conversation open.
        assert lead.locator("#presence .initials").inner_text() == "MA"
        assert mate.locator("#presence .initials").inner_text() == "LE"
        # Back on Activity, the reply is among the finished ones, paid by the team key.
        mate.goto(team_url + "activity/")
        assert "Complete" in mate.locator("#activity-finished li").first.inner_text()
        assert TEAM_KEY not in mate.content() and TEAM_KEY not in lead.content()
        assert upstream.requests[-1].headers["authorization"] == f"Bearer {TEAM_KEY}"
    finally:
        mate_context.close()


@pytest.mark.e2e
def test_an_invitation_link_opened_in_a_browser_joins_its_team(browser, page, live_server):
    sign_in(page, live_server.url)
    live_server.manage("shell", "-c", SEED_USERS)
    page.context.clear_cookies()
    log_in(page, "lead")
    page.goto("/teams/")
    page.fill("#team-name", "Invited")
    page.get_by_role("button", name="Create").click()
    page.wait_for_url(re.compile(r"/teams/\d+/$"))
    page.select_option("#invite-role", "viewer")
    page.get_by_role("button", name="Create a link").click()
    link = page.locator("#invite-url").inner_text().strip()
    assert re.fullmatch(r"http://127\.0\.0\.1:\d+/invite/#[A-Za-z0-9_-]{43,}", link), link

    guest_context = browser.new_context(base_url=live_server.url)
    guest_context.set_default_timeout(10_000)
    guest = guest_context.new_page()
    try:
        log_in(guest, "guest")
        guest.goto(link)
        guest.get_by_role("button", name="Accept the invitation").click()
        guest.wait_for_url(re.compile(r"/teams/\d+/#members$"))
        assert "You joined Invited as viewer" in guest.locator(".flash").inner_text()
        assert "guest (you)" in guest.locator("table.members").inner_text()
        # Used once: the same link now explains itself.
        guest.goto(link)
        guest.get_by_role("button", name="Accept the invitation").click()
        assert "This invitation is used" in guest.get_by_role("alert").inner_text()
    finally:
        guest_context.close()
    # The token never reached the server in a URL, so the access log cannot hold it.
    token = link.split("#", 1)[1]
    assert token not in live_server.log_path.read_text(errors="replace")
