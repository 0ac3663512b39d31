"""Layout in a real browser: nothing widens the page past the viewport, narrow screens get
drawers, and the keyboard reaches the message box, Send and the model picker at once."""

from __future__ import annotations

import pytest

from tests.e2e.test_browser import Sockets
from tests.e2e.test_parameters import sign_in
from tests.upstream import Behaviour

WIDE = {"width": 1280, "height": 800}
NARROW = {"width": 390, "height": 844}
# One unbroken line far wider than any column: the request body in "View code" carries it.
LONG_WORD = "supercalifragilistic" * 20


def open_conversation(page, live_server) -> Sockets:
    sign_in(page, live_server.url)
    sockets = Sockets(page)
    with sockets.transcript_loaded():
        page.goto("/")
    return sockets


def page_overflow(page) -> int:
    """How far the page scrolls sideways (0 when it does not)."""
    return page.evaluate(
        "Math.max(document.documentElement.scrollWidth, document.body.scrollWidth)"
        " - document.documentElement.clientWidth"
    )


def inside_viewport(page, selector: str) -> bool:
    box = page.locator(selector).bounding_box()
    size = page.viewport_size
    return (
        box is not None
        and box["x"] >= 0
        and box["y"] >= 0
        and box["x"] + box["width"] <= size["width"] + 0.5
        and box["y"] + box["height"] <= size["height"] + 0.5
    )


@pytest.mark.e2e
def test_view_code_scrolls_inside_its_box_at_1280_and_390_px(page, live_server):
    upstream = live_server.upstream
    upstream.reset()
    upstream.default = Behaviour(tokens=[f"A long word: {LONG_WORD}"])
    open_conversation(page, live_server)
    page.fill("#prompt", f"Repeat {LONG_WORD}")
    page.press("#prompt", "Enter")
    page.locator(".message.assistant.complete").wait_for()
    page.locator("details.code summary").click()
    snippet = page.locator(".snippet pre").first
    snippet.wait_for()

    for viewport in (WIDE, NARROW):
        page.set_viewport_size(viewport)
        page.wait_for_timeout(100)  # a layout pass
        assert page_overflow(page) == 0, viewport
        # The code block is what scrolls: it is wider inside than its box.
        inner, box = snippet.evaluate("el => [el.scrollWidth, el.clientWidth]")
        assert inner > box, viewport
        assert inside_viewport(page, "#send"), viewport
    page.set_viewport_size(WIDE)
    assert inside_viewport(page, "#model")  # the panel stays on screen


@pytest.mark.e2e
def test_at_390_px_the_sidebar_and_panel_are_drawers_from_the_header(page, live_server):
    upstream = live_server.upstream
    upstream.reset()
    upstream.default = Behaviour(tokens=["Drawers."])
    page.set_viewport_size(NARROW)
    open_conversation(page, live_server)
    page.fill("#prompt", "A conversation to find in the drawer")
    page.press("#prompt", "Enter")
    page.locator(".message.assistant.complete").wait_for()
    assert page_overflow(page) == 0
    for selector in ("#prompt", "#send", ".topbar .brand"):
        assert inside_viewport(page, selector), selector
    # Closed drawers are out of sight and out of the tab order.
    assert not page.locator("#sidebar").is_visible() and not page.locator("#panel").is_visible()

    conversations = page.locator('.drawer-toggle[data-drawer="sidebar"]')
    assert conversations.get_attribute("aria-expanded") == "false"
    conversations.click()
    assert conversations.get_attribute("aria-expanded") == "true"
    current = page.locator("#conversation-list .conv.current a")
    current.wait_for()
    page.wait_for_timeout(300)  # the slide-in
    assert inside_viewport(page, "#conversation-list .conv.current a")
    assert "A conversation to find" in current.inner_text()
    assert inside_viewport(page, "#sidebar button.primary")  # + New conversation
    assert page.locator("main").evaluate("el => el.inert")  # the chat behind is out of reach
    page.keyboard.press("Escape")
    assert conversations.get_attribute("aria-expanded") == "false"
    page.locator("#sidebar").wait_for(state="hidden")
    assert not page.locator("main").evaluate("el => el.inert")

    settings = page.locator('.drawer-toggle[data-drawer="panel"]')
    settings.click()
    assert settings.get_attribute("aria-expanded") == "true"
    page.wait_for_timeout(300)
    assert inside_viewport(page, "#model")
    # Every control of the panel can be scrolled to inside the drawer, the last one too.
    last = page.locator("#presets button").last
    last.scroll_into_view_if_needed()
    assert inside_viewport(page, "#presets button >> nth=-1")
    assert page_overflow(page) == 0

    # Its close button closes it.
    page.locator('#panel .drawer-head button[data-drawer="panel"]').click()
    page.locator("#panel").wait_for(state="hidden")
    assert settings.get_attribute("aria-expanded") == "false"

    # "Skip to model" reaches the model picker in the closed drawer: it opens the drawer.
    page.locator(".skip-links a", has_text="Skip to model").focus()
    page.keyboard.press("Enter")
    page.locator("#model").wait_for(state="visible")
    page.wait_for_timeout(300)
    assert page.evaluate("document.activeElement.id") == "model"
    assert inside_viewport(page, "#model")


@pytest.mark.e2e
def test_the_keyboard_reaches_message_send_and_model_in_a_few_tabs(page, live_server):
    sockets = open_conversation(page, live_server)
    # From the top of the page (a fragment keeps app.js from focusing the message box).
    page.goto(page.url + "#top")
    with sockets.transcript_loaded():
        page.reload()
    assert page.evaluate("document.activeElement === document.body")

    page.keyboard.press("Tab")
    skip = page.evaluate("document.activeElement.textContent")
    assert skip == "Skip to message"
    assert inside_viewport(page, ".skip-links a:focus")  # visible while focused
    page.keyboard.press("Enter")
    assert page.evaluate("document.activeElement.id") == "prompt"
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.id") == "send"
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.id") == "model"

    # The second skip link goes straight to the model picker.
    with sockets.transcript_loaded():
        page.reload()
    page.keyboard.press("Tab")
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.textContent") == "Skip to model"
    page.keyboard.press("Enter")
    assert page.evaluate("document.activeElement.id") == "model"


FOCUS_PLACE = """() => {
  const el = document.activeElement;
  if (!el || el === document.body) return "body";
  if (el.closest("#sidebar")) return "sidebar";
  if (el.closest("#panel")) return "panel";
  return el.closest(".topbar") ? "header" : el.tagName + "#" + el.id;
}"""


@pytest.mark.e2e
def test_at_390_px_tab_stays_inside_an_open_drawer(page, live_server):
    page.set_viewport_size(NARROW)
    open_conversation(page, live_server)
    for drawer in ("sidebar", "panel"):
        page.locator(f'.drawer-toggle[data-drawer="{drawer}"]').click()
        page.wait_for_timeout(300)  # the slide-in, and the focus moving into the drawer
        assert page.evaluate(FOCUS_PLACE) == drawer
        # Past the drawer's last control and back past its first: never the header behind.
        for key in ["Tab"] * 40 + ["Shift+Tab"] * 40:
            page.keyboard.press(key)
            assert page.evaluate(FOCUS_PLACE) in (drawer, "body"), (drawer, key)
        assert page.locator(".topbar").evaluate("el => el.inert")
        page.keyboard.press("Escape")
        page.locator(f"#{drawer}").wait_for(state="hidden")
        # Closed, the header is reachable again and the focus is back on its toggle.
        assert not page.locator(".topbar").evaluate("el => el.inert")
        assert page.evaluate(FOCUS_PLACE) == "header"


@pytest.mark.e2e
@pytest.mark.parametrize("size", [WIDE, NARROW], ids=["1280px", "390px"])
def test_the_header_fits_one_row_and_its_menus_open_and_close(page, live_server, size):
    sign_in(page, live_server.url)
    page.set_viewport_size(size)
    page.goto("/review/")
    # Nothing shown in the header reaches past the viewport (a closed menu's list is hidden).
    past_the_edge = page.evaluate(
        """() => [...document.querySelectorAll('.topbar *')]
            .filter(el => el.checkVisibility() && el.getBoundingClientRect().right > innerWidth)
            .map(el => el.tagName + '.' + el.className)"""
    )
    assert past_the_edge == []
    header = page.locator(".topbar").bounding_box()
    assert header is not None
    if size is WIDE:  # every top-level entry on one line
        assert header["height"] < 70

    review = page.locator("#review-menu")
    queues = review.get_by_role("link", name="Queues")
    assert not queues.is_visible()
    review.locator("summary").click()
    assert queues.is_visible()
    assert inside_viewport(page, "#review-menu .menu-list")
    # Opening another menu closes this one; Escape closes that one and gives the focus back.
    account = page.locator("#account-menu")
    account.locator("summary").click()
    assert not review.evaluate("el => el.open")
    assert page.get_by_role("link", name="API keys").is_visible()
    assert inside_viewport(page, "#account-menu .menu-list")
    page.keyboard.press("Escape")
    assert not account.evaluate("el => el.open")
    assert page.evaluate("document.activeElement.closest('#account-menu') !== null")
    # The keyboard opens one too, and a link in it leads on.
    page.keyboard.press("Enter")
    page.get_by_role("link", name="API keys").click()
    page.wait_for_url("**/keys/")
