"""What the page says when the server closes its socket on purpose: a restart (4012) after
the interrupted reply, and a message over the size limit (1009).

A Daphne process of this module's own (the session's live_server must outlive these tests),
started as bench.stack starts them, with a seeded user whose session cookie the browser gets.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.stack import Seed, Stack
from tests.conftest import copy_database
from tests.e2e.test_browser import Sockets
from tests.upstream import Behaviour, FakeUpstream


@pytest.fixture
def own_server(migrated_sqlite: Path) -> Iterator[tuple[Stack, FakeUpstream, Seed]]:
    upstream = FakeUpstream().start()
    stack = Stack(upstream.base_url, extra_env={"PLAYGROUND_SHUTDOWN_GRACE": "0.5"})
    try:
        copy_database(migrated_sqlite, stack.var_dir / "db.sqlite3")
        seed = stack.prepare(2)
        stack.start_servers(1)
        yield stack, upstream, seed
    finally:
        stack.stop()
        upstream.stop()
        stack.cleanup()


@pytest.fixture
def signed_in(browser, own_server):
    stack, upstream, seed = own_server
    server = stack.servers[0]
    context = browser.new_context(viewport={"width": 1280, "height": 800}, base_url=server.url)
    context.set_default_timeout(10_000)
    context.add_cookies([{"name": "sessionid", "value": seed.cookie, "url": server.url}])
    page = context.new_page()
    try:
        yield page, stack, upstream, seed
    finally:
        context.close()


def open_conversation(page, conversation: int) -> None:
    with Sockets(page).transcript_loaded():
        page.goto(f"/c/{conversation}/")


@pytest.mark.e2e
def test_a_restart_shows_the_interrupted_reply_and_why_the_socket_closed(signed_in):
    page, stack, upstream, seed = signed_in
    upstream.default = Behaviour(n_tokens=1000, interval=0.02)
    open_conversation(page, seed.conversations[0])
    page.fill("#prompt", "Count for me")
    page.press("#prompt", "Enter")
    page.locator(".message.assistant.streaming .body").filter(has_text="tok10").wait_for()

    stack.servers[0].process.send_signal(signal.SIGTERM)
    reply = page.locator(".message.assistant.interrupted")
    reply.wait_for()
    assert "The server restarted while this reply was being written." in reply.inner_text()
    status = page.locator("#composer-error")
    status.filter(has_text="The server is restarting; reconnecting in").wait_for()


@pytest.mark.e2e
def test_a_message_over_the_size_limit_is_explained_and_kept_in_the_composer(signed_in):
    page, stack, upstream, seed = signed_in
    open_conversation(page, seed.conversations[1])
    huge = "x" * (1024 * 1024 + 10)  # the JSON around it adds more
    page.fill("#prompt", huge)
    page.press("#prompt", "Enter")
    status = page.locator("#composer-error")
    status.filter(has_text="That message is larger than the server accepts").wait_for()
    assert len(page.input_value("#prompt")) == len(huge)  # nothing lost from the composer
    assert stack.saved_messages(list(range(1, 10))) == {}  # nothing was sent
