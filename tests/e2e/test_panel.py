"""The settings panel in a real browser: sections fold and stay folded, a filter finds a
parameter by name, an unset slider looks unset, and the schema editor shows only for a schema."""

from __future__ import annotations

import pytest

from tests.e2e.test_layout import open_conversation


def closed_cookie(page) -> str:
    cookies = {c["name"]: c["value"] for c in page.context.cookies()}
    return cookies.get("panel_closed", "")


def wait_for_closed_cookie(page, expected: str) -> None:
    """The browser fires "toggle" a moment after a section opens or closes."""
    for _ in range(100):
        if closed_cookie(page) == expected:
            return
        page.wait_for_timeout(20)
    assert closed_cookie(page) == expected


def saved_after(page, action) -> None:
    """Do `action` and wait for the panel to say this change (not an earlier one) was saved."""
    page.locator("#settings-status").evaluate("el => { el.textContent = ''; }")
    action()
    page.locator("#settings-status", has_text="Saved.").wait_for()


def opacity(page, selector: str) -> float:
    return float(page.locator(selector).evaluate("el => getComputedStyle(el).opacity"))


@pytest.mark.e2e
def test_a_folded_section_stays_folded_after_a_reload(page, live_server):
    sockets = open_conversation(page, live_server)
    section = page.locator('details[data-section="logprobs"]')
    summary = section.locator("summary")
    assert section.get_attribute("open") is not None
    assert summary.evaluate("el => el.getAttribute('role') || 'summary'")  # native disclosure
    summary.focus()
    page.keyboard.press("Enter")  # the keyboard folds it, as a click would
    assert section.get_attribute("open") is None
    assert not page.locator("#p-top_logprobs").is_visible()
    wait_for_closed_cookie(page, "logprobs")
    with sockets.transcript_loaded():
        page.reload()
    assert page.locator('details[data-section="logprobs"]').get_attribute("open") is None
    assert page.locator('details[data-section="sampling"]').get_attribute("open") is not None
    # Unfolded again, and remembered that way too.
    page.locator('details[data-section="logprobs"] summary').click()
    wait_for_closed_cookie(page, "")
    with sockets.transcript_loaded():
        page.reload()
    assert page.locator('details[data-section="logprobs"]').get_attribute("open") is not None


@pytest.mark.e2e
def test_the_filter_box_finds_a_parameter_by_name(page, live_server):
    open_conversation(page, live_server)
    page.locator('details[data-section="logprobs"] summary').click()  # folded
    # <details> fires "toggle" in a task of its own, after the click: the fold is remembered
    # (in a cookie) only then, and a filter typed before it would be taken for the user's.
    page.wait_for_function("document.cookie.includes('logprobs')")
    box = page.locator("#param-filter")
    box.fill("top")
    visible = page.locator("#settings .param:visible").evaluate_all(
        "params => params.map(p => p.id.slice(6))"
    )
    assert visible == ["top_p", "top_logprobs"]  # its folded section opened to show it
    assert not page.locator('details[data-section="thinking"]').is_visible()
    box.fill("max tokens")  # a space finds the underscore
    assert page.locator("#settings .param:visible").count() == 1
    assert page.locator("#p-max_tokens").is_visible()
    box.fill("nothing like it")
    assert page.locator("#filter-none").is_visible()
    assert page.locator("#settings .param:visible").count() == 0
    box.fill("")
    assert not page.locator("#filter-none").is_visible()
    assert page.locator("#p-temperature").is_visible()
    # Cleared, the sections are folded as the user left them.
    assert page.locator('details[data-section="logprobs"]').get_attribute("open") is None
    # Typing in it saved nothing: no settings request was made for the filter.
    assert page.locator("#settings-status").inner_text() == ""


@pytest.mark.e2e
def test_an_unset_slider_is_a_faint_ghost_until_it_is_set(page, live_server):
    open_conversation(page, live_server)
    unset = page.locator(".param#param-temperature button[data-unset]")
    slider = 'input[type=range][data-number="p-temperature"]'
    saved_after(page, unset.click)
    assert page.input_value("#p-temperature") == ""
    assert page.input_value(slider) == "0.7"  # at the provider's default, not at 0
    assert opacity(page, slider) < 0.5
    box = page.locator("#p-temperature")
    box.fill("1.2")
    saved_after(page, lambda: box.dispatch_event("change"))  # as leaving the box would
    assert opacity(page, slider) == 1
    assert page.input_value(slider) == "1.2"
    # Unset again: back to the default's place, faint, and saved so (later tests start from
    # the settings this one leaves).
    saved_after(page, unset.click)
    assert page.input_value(slider) == "0.7" and opacity(page, slider) < 0.5
    # The seed is a number box, without a slider.
    assert page.locator('input[type=range][data-number="p-seed"]').count() == 0
    assert page.locator("#p-seed").get_attribute("type") == "number"


@pytest.mark.e2e
def test_the_schema_editor_shows_only_for_a_json_schema(page, live_server):
    open_conversation(page, live_server)
    editor = page.locator('textarea[name="param:response_format:schema"]')
    name = page.locator('input[name="param:response_format:name"]')
    page.select_option("#p-response_format", "")
    assert not editor.is_visible() and not name.is_visible()
    page.select_option("#p-response_format", "json_object")
    assert not editor.is_visible() and not name.is_visible()
    page.select_option("#p-response_format", "json_schema")
    assert editor.is_visible() and name.is_visible()
    page.select_option("#p-response_format", "")


@pytest.mark.e2e
def test_picking_the_messages_format_turns_off_what_it_cannot_carry(page, live_server):
    open_conversation(page, live_server)
    assert page.locator("#p-seed").is_enabled()
    page.locator("#wire-format").select_option("messages")
    page.locator("#param-off-seed", has_text="The Messages format has no seed.").wait_for()
    assert not page.locator("#p-seed").is_enabled()
    assert page.locator("#p-thinking_budget").is_visible()
    assert page.locator("#p-temperature").get_attribute("max") == "1"
    # Back to Chat Completions: everything is on again.
    page.locator("#wire-format").select_option("chat")
    page.locator("#param-off-seed").wait_for(state="detached")
    assert page.locator("#p-seed").is_enabled()
