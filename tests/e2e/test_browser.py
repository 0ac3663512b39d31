"""The playground in a real browser, against the real server, as the spec tells the story.

Set PLAYGROUND_SCREENSHOT=docs/screenshot.png to also save the README screenshot (1280×800),
and PLAYGROUND_SCREENSHOT_NARROW=docs/screenshot-narrow.png for the phone-sized one (390×844).
"""

from __future__ import annotations

import contextlib
import os
import re
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from tests.upstream import Behaviour

ROOT = Path(__file__).resolve().parents[2]
API_KEY = "sk-e2e-LEAKCANARY-3b9d1f7a2c6e"
USERNAME = "ada"
PASSWORD = "correct horse battery staple"
MODEL_KEY = "empiriolabs:gemma-4-e4b"
MODEL_LABEL = "Gemma 4 E4B"
SYSTEM_PROMPT = "You are a concise senior Python reviewer. Answer with short, runnable examples."

STREAMING_BODY = ".message.assistant.streaming .body"
MARKDOWN_REPLY = [
    "## Reading a file line by line\n\n",
    "Open it with a context ",
    "manager, so it is closed even if an error is raised:\n\n",
    "- `open()` returns a lazy iterator over lines\n",
    "- each line keeps its trailing `\\n`\n",
    "- pass `encoding=` explicitly\n\n",
    "```python\n",
    'with open("app.log", encoding="utf-8") as f:\n',
    "    for line in f:\n",
    "        print(line.rstrip())\n",
    "```\n\n",
    "For **huge** files this uses constant memory.",
]


def chat_requests(upstream) -> list:
    return [r for r in upstream.requests if r.path.endswith("/chat/completions")]


class Sockets:
    """Every WebSocket the page opens, with how many frames the server sent on it."""

    def __init__(self, page) -> None:
        self.page = page
        self.opened: list = []
        self.received: dict[int, int] = {}
        page.on("websocket", self._opened)

    def _opened(self, ws) -> None:
        self.opened.append(ws)
        self.received[id(ws)] = 0
        ws.on("framereceived", lambda _frame: self._count(ws))

    def _count(self, ws) -> None:
        self.received[id(ws)] += 1

    @contextlib.contextmanager
    def transcript_loaded(self) -> Iterator[None]:
        """Around a navigation to a conversation: wait until the page's new socket got the
        server's first frame (the transcript), so a send does not race the handshake.
        Playwright delivers events only inside its own calls, so checking the counts and then
        waiting cannot miss an event in between."""
        before = len(self.opened)
        yield
        conversation = urlsplit(self.page.url).path.strip("/").split("/")[-1]
        path = f"/ws/conversations/{conversation}/"
        # The newest open socket to this conversation must have had a frame. Polled, because
        # when the page before had the same conversation open, its socket (closed by the
        # navigation, perhaps before its transcript arrived) can be reported after `before`
        # was read and before the new page's socket is; waiting on it would wait forever.
        deadline = time.monotonic() + 10
        while True:
            fresh = [
                ws
                for ws in self.opened[before:]
                if urlsplit(ws.url).path == path and not ws.is_closed()
            ]
            if fresh and self.received[id(fresh[-1])] > 0:
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"no transcript on {path} within 10 s")
            self.page.wait_for_timeout(50)  # a Playwright call: delivers pending events


@pytest.mark.e2e
def test_first_run_to_streamed_and_stopped_replies(page, live_server):
    upstream = live_server.upstream
    upstream.reset()
    origin = live_server.url
    conversation_url = re.compile(rf"{re.escape(origin)}/c/\d+/")
    requested: list[str] = []
    page.on("request", lambda request: requested.append(request.url))
    page.on("websocket", lambda ws: requested.append(ws.url))
    sockets = Sockets(page)
    csp_violations: list[str] = []
    page.on(
        "console",
        lambda msg: (
            csp_violations.append(msg.text)
            if msg.type == "error" and "Content Security Policy" in msg.text
            else None
        ),
    )

    # Opens the site: nobody has an account yet, so every page leads to the set-up form.
    page.goto("/")
    page.wait_for_url(f"{origin}/setup/")

    # Creates the admin account and lands on the API keys page.
    page.fill("#id_username", USERNAME)
    page.fill("#id_password1", PASSWORD)
    page.fill("#id_password2", PASSWORD)
    page.get_by_role("button", name="Create admin account").click()
    page.wait_for_url(f"{origin}/keys/")

    # Saves an EmpirioLabs key: from then on only its last four characters are shown.
    row = page.locator("#key-empiriolabs")
    row.locator("#key-input-empiriolabs").fill(API_KEY)
    row.get_by_role("button", name="Save").click()
    page.wait_for_url(f"{origin}/keys/")
    assert f"…{API_KEY[-4:]}" in row.inner_text()
    assert API_KEY not in page.content()
    assert API_KEY[:-4] not in page.content()

    # Goes to Chat, where Gemma 4 E4B is the default model.
    with sockets.transcript_loaded():
        page.get_by_role("link", name="Chat", exact=True).click()
        page.wait_for_url(conversation_url)
    first_chat = page.url
    assert page.input_value("#model") == MODEL_KEY
    page.select_option("#model", label=f"{MODEL_LABEL} · EmpirioLabs")
    assert page.input_value("#model") == MODEL_KEY

    # Types a message and presses Enter; the reply streams in before it completes.
    first = Behaviour(n_tokens=60, interval=0.05)
    upstream.script(first)
    page.fill("#prompt", "Count to sixty, slowly.")
    page.press("#prompt", "Enter")
    page.wait_for_function(
        """selector => {
            const body = document.querySelector(selector);
            return body !== null && body.textContent.trim().length > 0
                && body.closest('.message').classList.contains('streaming');
        }""",
        arg=STREAMING_BODY,
    )
    partial = page.inner_text(STREAMING_BODY)
    assert first.text.startswith(partial.strip())
    assert len(partial.strip()) < len(first.text)
    assert page.input_value("#prompt") == ""  # the server cleared the composer
    # The sidebar row took the first message as its title, without a reload.
    conversation_id = first_chat.rstrip("/").rsplit("/", 1)[-1]
    sidebar_row = page.locator(f"#conv-{conversation_id} a .t")
    assert sidebar_row.inner_text().strip() == "Count to sixty, slowly."

    reply = page.locator(".message.assistant.complete")
    reply.wait_for()
    assert reply.locator(".body").inner_text().strip() == first.text
    meta = reply.locator(".meta").inner_text()
    assert "Complete" in meta
    assert re.search(r"\d+ \+ 60 tokens", meta), meta
    assert re.search(r"TTFT \d+ ms", meta), meta
    assert page.locator(".message.user .body").first.inner_text() == "Count to sixty, slowly."
    assert chat_requests(upstream)[0].headers["authorization"] == f"Bearer {API_KEY}"

    # Sends a second message and stops it with Esc while it streams.
    upstream.script(Behaviour(n_tokens=400, interval=0.05))
    page.fill("#prompt", "Now count to four hundred.")
    page.press("#prompt", "Enter")
    page.wait_for_function(
        "s => { const b = document.querySelector(s); return b && b.textContent.trim() !== ''; }",
        arg=STREAMING_BODY,
    )
    page.keyboard.press("Escape")
    stopped = page.locator(".message.assistant.stopped")
    stopped.wait_for()
    assert "Stopped" in stopped.locator(".meta").inner_text()
    assert stopped.locator(".body").inner_text().startswith("tok0")
    assert page.locator(".message.assistant.streaming").count() == 0
    assert page.locator("#stop").is_hidden()

    # The server hung up on the upstream, and the second request carried the first turn.
    assert upstream.wait_for_disconnect(timeout=5), "the upstream never saw the client leave"
    requests = chat_requests(upstream)
    assert len(requests) == 2
    assert upstream.disconnects[0].request_index == requests[1].index
    assert upstream.disconnects[0].tokens_sent < 400
    assert requests[1].body["messages"] == [
        {"role": "user", "content": "Count to sixty, slowly."},
        {"role": "assistant", "content": first.text},
        {"role": "user", "content": "Now count to four hundred."},
    ]
    assert requests[1].body["model"] == "gemma-4-e4b"
    assert requests[1].body["stream"] is True

    # A fresh conversation with a system prompt; the reply's Markdown renders as HTML.
    with sockets.transcript_loaded():
        page.get_by_role("button", name="+ New conversation").click()
        page.wait_for_url(lambda url: conversation_url.fullmatch(url) and url != first_chat)
    page.fill("#system-prompt", SYSTEM_PROMPT)
    upstream.script(
        Behaviour(
            tokens=[
                "Use `pathlib.Path.read_text()` for small files, ",
                "and iterate ",
                "over the open file for big ones.",
            ],
            interval=0.01,
        ),
        Behaviour(tokens=MARKDOWN_REPLY, interval=0.01),
    )
    page.fill("#prompt", "How do I read a text file in Python?")
    page.press("#prompt", "Enter")
    page.locator(".message.assistant.complete").wait_for()
    page.fill("#prompt", "And a big log file, line by line?")
    page.press("#prompt", "Enter")
    page.locator(".message.assistant.complete").nth(1).wait_for()
    markdown = page.locator(".message.assistant.complete .body.markdown").nth(1)
    assert markdown.locator("h2").inner_text() == "Reading a file line by line"
    assert markdown.locator("ul > li").count() == 3
    assert "for line in f:" in markdown.locator("pre > code.language-python").inner_text()
    assert chat_requests(upstream)[-1].body["messages"][0] == {
        "role": "system",
        "content": SYSTEM_PROMPT,
    }

    # Opening the conversation again shows the saved transcript, its title in the sidebar
    # (which learns it only from the server) and no stray notices.
    with sockets.transcript_loaded():
        page.reload()
    assert page.locator(".message").count() == 4
    assert page.locator(".message.assistant.complete h2").inner_text() == (
        "Reading a file line by line"
    )
    assert page.locator("#conversation-list .current").inner_text().startswith("How do I read")
    assert page.locator(".flash").count() == 0
    assert page.input_value("#system-prompt") == SYSTEM_PROMPT

    # Nothing in all of that reached for another origin, and the CSP never had to step in.
    foreign = [url for url in requested if not _same_origin(url, origin)]
    assert foreign == []
    assert csp_violations == []

    screenshot = os.environ.get("PLAYGROUND_SCREENSHOT")
    if screenshot:
        page.locator("#prompt").blur()
        # caret="initial": hiding the caret would inject a <style>, which the CSP blocks.
        page.screenshot(path=str(ROOT / screenshot), caret="initial")
    narrow = os.environ.get("PLAYGROUND_SCREENSHOT_NARROW")
    if narrow:
        page.set_viewport_size({"width": 390, "height": 844})
        page.locator("#prompt").blur()
        page.wait_for_timeout(200)  # a layout pass
        page.locator("#transcript").evaluate("el => { el.scrollTop = el.scrollHeight; }")
        page.screenshot(path=str(ROOT / narrow), caret="initial")


def _same_origin(url: str, origin: str) -> bool:
    if url.startswith("data:"):
        return True  # the empty inline favicon (<link rel="icon" href="data:,">)
    parts, expected = urlsplit(url), urlsplit(origin)
    return parts.netloc == expected.netloc and parts.scheme in ("http", "ws")
