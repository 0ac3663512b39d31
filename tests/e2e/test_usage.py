"""A budget in a browser: a team admin sets a daily cap of one message on the Usage page; the
first reply streams, the header then warns, the second send is refused with the limit and
when it resets and reaches no provider, and the Usage page shows the one reply."""

from __future__ import annotations

import re

import pytest

from tests.e2e.test_browser import Sockets
from tests.e2e.test_parameters import sign_in
from tests.e2e.test_teams import SEED_USERS, log_in
from tests.upstream import Behaviour


@pytest.mark.e2e
def test_a_daily_cap_stops_the_second_run_with_a_clear_message(page, live_server):
    sign_in(page, live_server.url)
    live_server.manage("shell", "-c", SEED_USERS)
    upstream = live_server.upstream
    upstream.reset()
    upstream.default = Behaviour(n_tokens=5)

    page.context.clear_cookies()
    log_in(page, "lead")
    page.goto("/teams/")
    page.fill("#team-name", "Capped")
    page.get_by_role("button", name="Create").click()
    page.wait_for_url(re.compile(r"/teams/\d+/$"))
    team_url = page.url
    page.locator("#team-key-input-empiriolabs").fill("sk-e2e-capped-key-5555")
    page.locator("#team-key-empiriolabs button.primary").click()

    page.goto(team_url + "usage/")
    page.fill("#budget-daily-messages", "1")
    page.get_by_role("button", name="Save budget").click()
    assert "Budget for the team saved." in page.locator(".flash").inner_text()
    assert "The team's daily cap of 1 message:" in page.locator(".usage-limits").inner_text()

    sockets = Sockets(page)
    with sockets.transcript_loaded():
        page.get_by_role("link", name="Chat", exact=True).click()
        page.wait_for_url(re.compile(r"/c/\d+/$"))
    conversation_url = page.url
    page.fill("#prompt", "The one allowed")
    page.keyboard.press("Enter")
    page.locator(".message.assistant .status-complete").wait_for()
    sent = len(upstream.requests)
    assert sent == 1

    with sockets.transcript_loaded():
        page.goto(conversation_url)
    warning = page.locator(".budget-warnings").inner_text()
    assert "100 % of the team's daily cap of 1 message used; it resets on" in warning

    page.fill("#prompt", "One too many")
    page.keyboard.press("Enter")
    error = page.locator("#composer-error")
    error.filter(has_text="Not sent").wait_for()
    assert re.search(
        r"Not sent: this would go over the team's daily cap of 1 message \(1 used\)\. "
        r"It resets on \d+ \w+ \d{4} 00:00 UTC\.",
        error.inner_text(),
    ), error.inner_text()
    assert len(upstream.requests) == sent  # refused before any request
    assert page.locator(".message.assistant").count() == 1

    page.goto(team_url + "usage/")
    totals = page.locator("#usage-total").inner_text().split()
    assert totals[:2] == ["Total", "1"]
    assert "lead" in page.locator("#by-member table").inner_text()
    assert page.locator("#by-day svg rect").count() == 30
