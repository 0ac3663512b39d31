"""A server at its socket cap, in a browser: the page says so instead of hanging, and gets in
by itself once a socket is free."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import expect

from tests.e2e.conftest import LiveServer, start_live_server
from tests.e2e.test_browser import Sockets
from tests.e2e.test_parameters import sign_in
from tests.upstream import FakeUpstream


@pytest.fixture(scope="module")
def capped_server(e2e_upstream: FakeUpstream, migrated_sqlite: Path) -> Iterator[LiveServer]:
    """A second live Daphne that holds one socket at a time."""
    yield from start_live_server(e2e_upstream, migrated_sqlite, PLAYGROUND_MAX_SOCKETS="1")


def new_page(browser, server: LiveServer):
    context = browser.new_context(viewport={"width": 1280, "height": 800}, base_url=server.url)
    context.set_default_timeout(10_000)
    return context, context.new_page()


@pytest.mark.e2e
def test_a_page_over_capacity_says_so_and_gets_in_when_a_socket_frees(browser, capped_server):
    first_context, first = new_page(browser, capped_server)
    second_context, second = new_page(browser, capped_server)
    try:
        sign_in(first, capped_server.url)
        with Sockets(first).transcript_loaded():
            first.goto("/")  # holds the one socket
        sign_in(second, capped_server.url)
        second.goto("/")
        status = second.locator("#composer-error")
        expect(status).to_contain_text("The server is at capacity; retrying in")
        first_context.close()  # its socket closes: the slot is free
        # The retry comes after a jittered 1-2 s (then 2-4 s, …) and clears the message.
        expect(status).to_have_text("", timeout=15_000)
        expect(second.locator("#transcript")).to_be_visible()
    finally:
        second_context.close()
        if first_context.pages:
            first_context.close()
