"""A reply's first text shown before its rows are written, in a browser: the provisional rows
are replaced by the real ones, and every piece of the reply is on the page exactly once."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import expect

from tests.e2e.conftest import LiveServer, start_live_server
from tests.e2e.test_browser import Sockets
from tests.e2e.test_parameters import sign_in
from tests.upstream import Behaviour, FakeUpstream


@pytest.fixture(scope="module")
def early_server(e2e_upstream: FakeUpstream, migrated_sqlite: Path) -> Iterator[LiveServer]:
    """A live Daphne that waits up to 2 s for a reply's first text before writing its rows:
    the fake's first token always comes first, whatever the machine's load."""
    yield from start_live_server(e2e_upstream, migrated_sqlite, PLAYGROUND_EARLY_TEXT_WAIT="2")


@pytest.mark.e2e
def test_the_provisional_rows_give_way_to_the_real_ones(browser, early_server):
    viewport = {"width": 1280, "height": 800}
    context = browser.new_context(viewport=viewport, base_url=early_server.url)
    context.set_default_timeout(10_000)
    page = context.new_page()
    try:
        upstream = early_server.upstream
        upstream.reset()
        sign_in(page, early_server.url)
        frames: list[str] = []
        page.on("websocket", lambda ws: ws.on("framereceived", lambda frame: frames.append(frame)))
        with Sockets(page).transcript_loaded():
            page.goto("/")
        upstream.script(Behaviour(tokens=["First", " second", " third"], interval=1.0))
        page.fill("#prompt", "Count in words")
        page.press("#prompt", "Enter")

        # The real rows replace the provisional ones; the text shown early is there once.
        reply = page.locator(".message.assistant.streaming .body")
        expect(reply).to_have_text("First")
        expect(page.locator("#msg-sending-reply, #msg-sending-prompt")).to_have_count(0)
        expect(page.locator(".message.user")).to_have_count(1)
        expect(page.locator(".message.user .body")).to_have_text("Count in words")
        expect(page.locator("#prompt")).to_have_value("")
        assert any('id="msg-sending-reply"' in f for f in frames if isinstance(f, str))
        # The next delta goes on after it, once (polled every frame: it shows for a second).
        page.wait_for_function(
            "() => document.querySelector('.message.assistant.streaming .body')"
            "?.textContent === 'First second'",
            polling="raf",
        )

        done = page.locator(".message.assistant.complete .body")
        expect(done).to_have_text("First second third")
        expect(page.locator(".message.assistant")).to_have_count(1)
    finally:
        context.close()
