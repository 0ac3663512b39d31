"""The sidebar in a browser: the next 50 conversations arrive as the list scrolls, and a
keyboard reaches them through the "Show more" button."""

from __future__ import annotations

import pytest

from tests.e2e.test_browser import Sockets
from tests.e2e.test_page_weight import sign_in_with_history

ROWS = "#conversation-list li.conv"


def row_ids(page) -> list[str]:
    return page.locator(ROWS).evaluate_all("rows => rows.map(row => row.id)")


def wait_for_rows(page, n: int) -> None:
    """At least n rows (wait_for_function would need eval, which the page's CSP forbids)."""
    page.locator(ROWS).nth(n - 1).wait_for(state="attached")


def open_history(page, live_server) -> None:
    sign_in_with_history(page, live_server)
    with Sockets(page).transcript_loaded():
        page.goto("/")
    assert page.locator(ROWS).count() == 50


@pytest.mark.e2e
def test_scrolling_the_sidebar_loads_the_next_pages(page, live_server):
    open_history(page, live_server)
    sidebar = page.locator(".sidebar")
    for shown in (100, 150):
        sidebar.evaluate("el => { el.scrollTop = el.scrollHeight; }")
        wait_for_rows(page, shown)
    ids = row_ids(page)
    assert len(ids) == len(set(ids)), "a conversation was listed twice"
    assert page.locator("#conversation-more").count() == 1


@pytest.mark.e2e
def test_a_keyboard_reaches_older_conversations_with_show_more(page, live_server):
    open_history(page, live_server)
    more = page.locator("#conversation-more")
    # Focus it without scrolling: only the keyboard loads the next page here.
    more.evaluate("button => button.focus({preventScroll: true})")
    page.keyboard.press("Enter")
    wait_for_rows(page, 100)
    # The focus carries on at the first new row, an older conversation than any shown before.
    fifty_first = page.locator(ROWS).nth(50)
    focused = page.evaluate(
        "document.activeElement.closest('li') && document.activeElement.closest('li').id"
    )
    assert focused == fifty_first.get_attribute("id")
    ids = row_ids(page)
    assert len(ids) == len(set(ids)), "a conversation was listed twice"


@pytest.mark.e2e
def test_tabbing_down_the_rows_reaches_older_conversations(page, live_server):
    open_history(page, live_server)
    # From the last row's link, past its Rename and Delete buttons, Tab goes on into the
    # next page: focusing "Show more" scrolls it into view, which loads the next page, and
    # the focus carries on at its first row. (No Enter here: the load may already have
    # replaced the button, and Enter would then open the row that took the focus.)
    page.locator(f"{ROWS} a").last.focus()
    for _ in range(6):
        page.keyboard.press("Tab")
        if page.evaluate("document.activeElement.id") == "conversation-more":
            break
    wait_for_rows(page, 100)
    position = page.evaluate(
        "[...document.querySelectorAll('#conversation-list li.conv')]"
        ".indexOf(document.activeElement.closest('li'))"
    )
    assert position >= 50, "the focus did not reach an older conversation"


@pytest.mark.e2e
def test_the_open_conversation_is_highlighted_and_scrolled_into_view(page, live_server):
    open_history(page, live_server)
    row = page.locator(ROWS).nth(40)  # far below the fold of an 800-pixel window
    row_id = row.get_attribute("id")
    with Sockets(page).transcript_loaded():
        page.goto(row.locator("a").get_attribute("href"))
    current = page.locator("#conversation-list li.conv.current")
    assert current.get_attribute("id") == row_id
    assert current.locator("a").get_attribute("aria-current") == "page"
    # Inside the sidebar's visible part, not just somewhere in its scrolled list.
    # Within half a pixel: with a header of fractional height, a row scrolled to the very
    # bottom can end 1/64 px past it.
    box, sidebar = current.bounding_box(), page.locator(".sidebar").bounding_box()
    bottom = sidebar["y"] + sidebar["height"] + 0.5
    assert sidebar["y"] - 0.5 <= box["y"] and box["y"] + box["height"] <= bottom
    assert current.evaluate("el => getComputedStyle(el).backgroundColor") != "rgba(0, 0, 0, 0)"
