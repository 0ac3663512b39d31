"""A two-column compare in a real browser: set up, one message streams into both columns at
once, Stop all stops both; the figures, the word diff and a reload after closing the tab."""

from __future__ import annotations

import os

import pytest

from tests.e2e.test_parameters import sign_in
from tests.upstream import Behaviour

MODEL_KEY = "empiriolabs:gemma-4-e4b"


@pytest.mark.e2e
def test_a_two_column_compare_streams_both_and_stops(page, live_server):
    upstream = live_server.upstream
    upstream.reset()
    sign_in(page, live_server.url)
    problems: list[str] = []
    page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)

    page.goto("/compare/new/")
    page.get_by_label("Title").fill("Two temperatures")
    page.locator("select[name=c1-model]").select_option(MODEL_KEY)
    page.locator("textarea[name=c1-params]").fill("temperature = 0.1")
    page.locator("select[name=c2-model]").select_option(MODEL_KEY)
    page.locator("select[name=c2-wire_format]").select_option("messages")
    page.locator("textarea[name=c2-params]").fill("temperature = 0.9")
    page.get_by_role("button", name="Create compare").click()
    page.wait_for_url(lambda url: "/compare/" in url and url.rstrip("/").split("/")[-1].isdigit())
    columns = page.locator("section.column")
    assert columns.count() == 2

    # A slow reply: both columns are seen streaming at the same moment, then Stop all.
    upstream.default = Behaviour(n_tokens=400, interval=0.03)
    page.wait_for_timeout(300)  # the socket's first frame (the page as it is) has arrived
    page.locator("#prompt").fill("Count slowly")
    page.keyboard.press("Enter")
    first = columns.nth(0).locator(".message.assistant.streaming .body")
    second = columns.nth(1).locator(".message.assistant.streaming .body")
    page.wait_for_function(
        """() => [...document.querySelectorAll('section.column .message.assistant.streaming .body')]
                 .filter(el => el.textContent.includes('tok3')).length === 2"""
    )
    assert "tok" in first.inner_text() and "tok" in second.inner_text()
    assert columns.nth(0).locator(".column-stats .status").inner_text() == "Streaming"
    page.get_by_role("button", name="Stop all").click()
    for n in range(2):
        columns.nth(n).locator(".message.assistant.stopped").wait_for()
        stats = columns.nth(n).locator(".column-stats").inner_text()
        assert "Stopped" in stats and "TTFT" in stats and "tok/s" in stats
    paths = sorted(r.path for r in upstream.requests)
    assert paths == ["/v1/chat/completions", "/v1/messages"]

    # A finished send; then the word diff between the columns.
    upstream.script(Behaviour(tokens=["The cat sat."]), Behaviour(tokens=["The dog sat."]))
    page.locator("#prompt").fill("Once more")
    page.keyboard.press("Enter")
    page.wait_for_function(
        "() => document.querySelectorAll('section.column .message.assistant.complete').length === 2"
    )
    page.get_by_role("button", name="Show word diff").click()
    page.locator("#diff del").first.wait_for()
    if os.environ.get("PLAYGROUND_COMPARE_SCREENSHOT"):
        page.screenshot(path=os.environ["PLAYGROUND_COMPARE_SCREENSHOT"], full_page=True)
    deleted = page.locator("#diff del").all_inner_texts()
    inserted = page.locator("#diff ins").all_inner_texts()
    # Which column got which reply depends on which request reached the upstream first.
    assert sorted(deleted + inserted) == ["cat", "dog"]

    # Reopened from the list (the tab closed): everything is there.
    url = page.url
    page.goto("/compare/")
    page.get_by_role("link", name="Two temperatures").click()
    page.wait_for_url(url)
    assert page.locator("section.column .message.assistant").count() == 4
    assert problems == []


@pytest.mark.e2e
def test_a_two_by_two_by_two_sweep_runs_on_after_the_tab_closes_and_reopens_from_history(
    page, live_server
):
    upstream = live_server.upstream
    upstream.reset()
    sign_in(page, live_server.url)
    page.goto("/compare/sweeps/new/")
    page.get_by_label("Title").fill("Heat grid")
    page.locator("select[name=c1-model]").select_option(MODEL_KEY)
    page.get_by_label("Message every cell sends").fill("Name a colour")
    page.locator("input[name=axis1]").fill("temperature")
    page.locator("input[name=values1]").fill("0, 1.4")
    page.locator("input[name=axis2]").fill("top_p")
    page.locator("input[name=values2]").fill("0.9, 1.0")
    page.get_by_label("Seeds per combination").fill("2")
    page.get_by_role("button", name="Create sweep").click()
    page.wait_for_url(lambda url: url.rstrip("/").split("/")[-1].isdigit())
    rows = page.locator("table.sweep tbody tr")
    assert rows.count() == 8

    upstream.default = Behaviour(n_tokens=60, interval=0.03)
    page.wait_for_timeout(300)  # the socket's first frame has arrived
    page.get_by_role("button", name="Run sweep").click()
    page.locator("table.sweep .streaming-row .stream").first.wait_for()
    page.wait_for_function(
        "() => [...document.querySelectorAll('table.sweep .stream')]"
        ".some(el => el.textContent.includes('tok2'))"
    )
    url = page.url
    page.goto("about:blank")  # the tab closes mid-sweep

    page.goto("/review/")
    page.get_by_role("link", name="Compares and sweeps").click()
    page.get_by_role("link", name="Heat grid").click()
    page.wait_for_url(url)
    page.wait_for_function(
        "() => document.querySelectorAll('table.sweep .status-complete').length === 8",
        timeout=30_000,
    )
    assert page.locator("#sweep-status").inner_text() == "Every cell has run."
    bodies = sorted(
        (r.body["temperature"], r.body["top_p"], r.body["seed"]) for r in upstream.requests
    )
    assert bodies == sorted((t, p, s) for t in (0, 1.4) for p in (0.9, 1.0) for s in (1, 2))
    page.locator("table.sweep tbody tr").nth(1).locator("summary").click()
    assert "same text as the baseline" in page.locator("table.sweep tbody tr").nth(1).inner_text()


@pytest.mark.e2e
def test_a_three_column_compare_streams_all_three_and_reopens_from_history_after_the_tab_closes(
    page, live_server
):
    upstream = live_server.upstream
    upstream.reset()
    sign_in(page, live_server.url)
    page.goto("/compare/new/")
    page.get_by_role("link", name="Add a column").click()
    page.locator("select[name=c3-model]").wait_for()
    page.get_by_label("Title").fill("Three ways")
    for n, temperature in ((1, "0"), (2, "0.7"), (3, "1.4")):
        page.locator(f"select[name=c{n}-model]").select_option(MODEL_KEY)
        page.locator(f"textarea[name=c{n}-params]").fill(f"temperature = {temperature}")
    page.get_by_role("button", name="Create compare").click()
    page.wait_for_url(lambda url: "/compare/" in url and url.rstrip("/").split("/")[-1].isdigit())
    columns = page.locator("section.column")
    assert columns.count() == 3

    upstream.default = Behaviour(n_tokens=60, interval=0.03)
    page.wait_for_timeout(300)  # the socket's first frame (the page as it is) has arrived
    page.locator("#prompt").fill("Count")
    page.keyboard.press("Enter")
    # All three are seen streaming at the same moment.
    page.wait_for_function(
        """() => [...document.querySelectorAll('section.column .message.assistant.streaming .body')]
                 .filter(el => el.textContent.includes('tok3')).length === 3"""
    )
    url = page.url
    page.goto("about:blank")  # the tab closes mid-run

    page.goto("/review/")
    page.get_by_role("link", name="Compares and sweeps").click()
    page.get_by_role("link", name="Three ways").click()
    page.wait_for_url(url)
    page.wait_for_function(
        "() => document.querySelectorAll('section.column .message.assistant.complete').length"
        " === 3",
        timeout=30_000,
    )
    text = Behaviour(n_tokens=60).text
    for n in range(3):
        assert columns.nth(n).locator(".message.assistant .body").inner_text().strip() == text
    temperatures = sorted(r.body["temperature"] for r in upstream.requests)
    assert temperatures == [0, 0.7, 1.4]

    # Deleted from its page (after a confirm): gone from the list of compares and sweeps.
    page.get_by_role("link", name="Delete…").click()
    page.get_by_role("button", name="Delete compare").click()
    page.wait_for_url(lambda url: url.rstrip("/").endswith("/compare"))
    page.locator(".flash li").first.wait_for()
    assert page.get_by_role("link", name="Three ways").count() == 0


MAKE_PROMPT = """
from django.contrib.auth import get_user_model
from playground.prompts.models import Prompt
user = get_user_model().objects.get(username={username!r})
prompt, _ = Prompt.objects.get_or_create(owner=user, team=None, name="compare-greeter")
if not prompt.versions.exists():
    prompt.add_version(user, system_prompt="Greet {{{{guest}}}} warmly.", messages=[],
                       model={model!r}, params={{}})
"""


@pytest.mark.e2e
def test_a_compare_column_from_a_prompt_version_fills_its_variables_in(page, live_server):
    from tests.e2e.test_browser import USERNAME

    upstream = live_server.upstream
    upstream.reset()
    sign_in(page, live_server.url)
    live_server.manage("shell", "-c", MAKE_PROMPT.format(username=USERNAME, model=MODEL_KEY))
    page.locator("#space-switcher summary").click()
    page.locator("#space-switcher button", has_text="Personal").click()
    page.goto("/compare/new/")
    page.get_by_label("Title").fill("Greeters")
    page.locator("select[name=c1-prompt_version]").select_option(label="compare-greeter v1")
    page.locator("select[name=c2-model]").select_option(MODEL_KEY)
    page.locator("textarea[name=c2-system_prompt]").fill("Greet tersely.")
    page.get_by_role("button", name="Create compare").click()
    page.wait_for_url(lambda url: url.rstrip("/").split("/")[-1].isdigit())
    assert "Variables" in page.locator("#compare-variables").inner_text()

    upstream.default = Behaviour(tokens=["Hello!"])
    page.wait_for_timeout(300)  # the socket's first frame has arrived
    page.locator("#prompt").fill("Hi")
    page.keyboard.press("Enter")  # {{guest}} has no value: refused, says which
    page.locator("#composer-error", has_text="{{guest}}").wait_for()
    assert upstream.requests == []
    page.get_by_label("guest").fill("Ada")
    page.locator("#prompt").fill("Hi")
    page.keyboard.press("Enter")
    page.wait_for_function(
        "() => document.querySelectorAll('section.column .message.assistant.complete').length === 2"
    )
    systems = sorted(r.body["messages"][0]["content"] for r in upstream.requests)
    assert systems == ["Greet Ada warmly.", "Greet tersely."]
