"""Images in a real browser: drop and paste them, see thumbnails, send them upstream."""

from __future__ import annotations

import base64
import io

import pytest
from PIL import Image

from tests.e2e.test_browser import Sockets, chat_requests
from tests.e2e.test_parameters import sign_in
from tests.upstream import Behaviour

DELIVER = """async ([kind, b64]) => {
  const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
  const file = new File([bytes], "dot.png", { type: "image/png" });
  const transfer = new DataTransfer();
  transfer.items.add(file);
  const target = kind === "drop" ? document.getElementById("transcript")
                                 : document.getElementById("prompt");
  const event = kind === "drop"
    ? new DragEvent("drop", { dataTransfer: transfer, bubbles: true, cancelable: true })
    : new ClipboardEvent("paste", { clipboardData: transfer, bubbles: true, cancelable: true });
  target.dispatchEvent(event);
}"""


def png(color: str) -> str:
    out = io.BytesIO()
    Image.new("RGB", (12, 8), color).save(out, "PNG")
    return base64.b64encode(out.getvalue()).decode()


@pytest.mark.e2e
def test_dropped_and_pasted_images_are_sent_as_image_parts(page, live_server):
    upstream = live_server.upstream
    upstream.reset()
    upstream.default = Behaviour(tokens=["Two dots."])
    sign_in(page, live_server.url)
    sockets = Sockets(page)
    with sockets.transcript_loaded():
        page.goto("/")

    page.evaluate(DELIVER, ["drop", png("red")])
    page.locator(".thumb img").first.wait_for()
    page.evaluate(DELIVER, ["paste", png("blue")])
    page.wait_for_function("() => document.querySelectorAll('.thumb img').length === 2")
    # Each thumbnail can be removed before sending; remove and add one again.
    page.locator(".thumb .remove").nth(1).click()
    assert page.locator(".thumb").count() == 1
    page.evaluate(DELIVER, ["paste", png("blue")])
    page.wait_for_function("() => document.querySelectorAll('.thumb img').length === 2")

    page.fill("#prompt", "What do you see?")
    page.press("#prompt", "Enter")
    page.locator(".message.assistant.complete").wait_for()
    assert page.locator(".thumb").count() == 0  # the tray empties after sending
    assert page.locator(".message.user .images img").count() == 2
    content = chat_requests(upstream)[-1].body["messages"][-1]["content"]
    assert content[0] == {"type": "text", "text": "What do you see?"}
    assert [part["type"] for part in content[1:]] == ["image_url", "image_url"]
    assert all(p["image_url"]["url"].startswith("data:image/png;base64,") for p in content[1:])
    # The transcript's images load (they are served to their owner).
    page.wait_for_function(
        "() => [...document.querySelectorAll('.message.user .images img')]"
        ".every((img) => img.complete && img.naturalWidth > 0)"
    )


@pytest.mark.e2e
def test_markup_in_model_output_never_runs_while_streaming_or_after(page, live_server):
    upstream = live_server.upstream
    upstream.reset()
    evil = [
        '<img src=x onerror="window.pwned=1">',
        "<script>window.pwned=2</script>",
        '<svg onload="window.pwned=3"></svg>',
        "[click](javascript:window.pwned=4)",
    ]
    upstream.default = Behaviour(tokens=[*evil, *[" tok"] * 40], interval=0.05)
    sign_in(page, live_server.url)
    sockets = Sockets(page)
    with sockets.transcript_loaded():
        page.goto("/")
    page.fill("#prompt", "Be evil.")
    page.press("#prompt", "Enter")
    # While streaming, the markup shows as text.
    page.wait_for_function(
        "() => { const b = document.querySelector('.message.assistant.streaming .body');"
        " return b && b.textContent.includes('<svg onload'); }"
    )
    assert page.locator(".message.assistant .body img, .message.assistant .body svg").count() == 0
    page.locator(".message.assistant.complete").wait_for()
    body = page.locator(".message.assistant.complete .body")
    assert body.locator("img, svg, script").count() == 0
    assert body.locator("a[href^='javascript']").count() == 0
    assert page.evaluate("() => window.pwned") is None
